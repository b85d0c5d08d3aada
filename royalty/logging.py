"""Structured logging for every component (structlog over the standard library).

Console lines for people, JSON lines for machines (`ROYALTY_LOG_JSON=true`). Components bind
correlation fields (usage id, epoch, block) with `structlog.contextvars.bind_contextvars` so
one inference can be followed to its payout across processes.
"""

from __future__ import annotations

import logging
import sys

import structlog

from royalty.config import EngineSettings


def configure_logging(settings: EngineSettings) -> None:
    """Configure structlog and the standard library root logger once per process."""
    level = getattr(logging, settings.log_level.upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
