"""`royalty analytics`: copy the settlement database into ClickHouse (chDB by default)."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Annotated

import typer

from royalty.config import load_settings
from royalty.logging import configure_logging
from schemas.engine import create_engine
from stream.sinks.clickhouse_tailer import AnalyticsTailer

app = typer.Typer(help="Analytics in ClickHouse.", no_args_is_help=True)


@app.command()
def sync(
    follow: Annotated[bool, typer.Option(help="Keep syncing until SIGTERM / Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between syncs with --follow.")] = 5.0,
    db_url: Annotated[str | None, typer.Option(help="Database URL (default: settings).")] = None,
    url: Annotated[
        str | None, typer.Option(help="ClickHouse URL, e.g. chdb://dir (default: settings).")
    ] = None,
) -> None:
    """Copy new usage, accruals, rejects, epochs and payouts into the analytics database.

    At least once and idempotent: every table collapses re-sent rows (query with FINAL).
    """
    import clickhouse_connect
    import structlog

    settings = load_settings()
    configure_logging(settings.engine)
    log = structlog.get_logger("royalty.analytics")
    engine = create_engine(db_url or settings.database_url)
    client = clickhouse_connect.get_client(dsn=url or settings.analytics_url)
    tailer = AnalyticsTailer(engine, client, settings.analytics.database)
    tailer.ensure_schema()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while True:
            started = time.monotonic()
            report = tailer.sync()
            log.info(
                "analytics synced",
                usage=report.usage,
                accruals=report.accruals,
                rejects=report.rejects,
                epochs=report.epochs,
                payouts=report.payouts,
                seconds=round(time.monotonic() - started, 3),
            )
            if not follow or stop.wait(interval):
                break
    finally:
        engine.dispose()
