"""Composition root of `royalty reconcile`: Triton's metrics against the usage topic."""

from __future__ import annotations

import signal
import threading

import structlog
from prometheus_client import start_http_server

from metering.errors import ConfigurationError
from metering.metrics import MeteringMetrics
from metering.reconciler import DriftReport, Reconciler
from metering.reconciler_sources import TritonMetricsCounter, UsageTopicCounter
from metering.settings import billing_table
from royalty.config import Settings
from royalty.logging import configure_logging

log = structlog.get_logger(__name__)


def run_reconciler(
    settings: Settings,
    *,
    once: bool = False,
    window_s: float | None = None,
    metrics_port: int | None = None,
) -> list[DriftReport]:
    """Reconcile every metered model until SIGTERM/SIGINT; with `once`, judge one window and
    return its reports."""
    configure_logging(settings.engine)
    billing = billing_table(settings.metering)
    if not billing:
        raise ConfigurationError("no metered models to reconcile ([metering.models.*])")
    interval = window_s or settings.metering.reconcile_interval_s
    lateness = min(10.0, interval)
    metrics = MeteringMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    counter = UsageTopicCounter(
        settings.kafka.bootstrap_servers, settings.kafka.usage_topic, billing
    ).start()
    reconciler = Reconciler(
        TritonMetricsCounter(settings.triton.metrics_url),
        counter,
        list(billing),
        tolerance=settings.metering.reconcile_tolerance,
        lateness_s=lateness,
        metrics=metrics,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        if not once:
            reconciler.run(interval, stop)
            return []
        reconciler.sample()
        if stop.wait(interval):
            return []
        reconciler.sample()
        stop.wait(lateness)
        return reconciler.judge_ready()
    finally:
        counter.stop()
