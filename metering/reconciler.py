"""The reconciler: Triton's own success counts against the usage events of the same window.

Triton counts every successful inference request per model (statistics extension,
`nv_inference_request_success`), whoever sent it. Usage events count what metering saw. Over
the same window the two must agree; when Triton counts more, traffic reached the model server
around metering (a direct port left open, a misconfigured client) and was never billed. The
reconciler reports that drift per model as a metric and a log line.

Windows are the intervals between two samples of Triton's cumulative counters. A window is
judged only `lateness_s` after its end, so that events still in a spool or in flight are
counted; events are attributed by their own time (when the inference completed).

The comparison is pure (`drift_reports`); the counters are ports with Triton and Kafka
adapters in `metering.reconciler_sources`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from metering.metrics import MeteringMetrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DriftReport:
    """One model over one window: Triton's successes, metered events, and their difference."""

    model: str
    start: float
    end: float
    triton: int
    metered: int
    tolerance: int = 0

    @property
    def drift(self) -> int:
        """Triton successes minus metered events: positive means unmetered traffic."""
        return self.triton - self.metered

    @property
    def ok(self) -> bool:
        """Whether the drift is within tolerance."""
        return abs(self.drift) <= self.tolerance


def drift_reports(
    start: float,
    end: float,
    triton_before: Mapping[str, int],
    triton_after: Mapping[str, int],
    metered: Mapping[str, int],
    models: Sequence[str],
    tolerance: int = 0,
) -> list[DriftReport]:
    """The drift of each model over [start, end] from Triton's cumulative counters at both
    ends and the number of (distinct) usage events dated inside the window."""
    reports = []
    for model in models:
        served = triton_after.get(model, 0) - triton_before.get(model, 0)
        if served < 0:
            # A counter went down: Triton restarted inside the window; count from zero.
            served = triton_after.get(model, 0)
        reports.append(DriftReport(model, start, end, served, metered.get(model, 0), tolerance))
    return reports


class TritonCounter(Protocol):
    """Port: Triton's cumulative successful inference requests per model, now."""

    def sample(self, models: Sequence[str]) -> dict[str, int]:
        """The counters now."""
        ...


class MeteredCounter(Protocol):
    """Port: distinct usage events per Triton model, by event time."""

    def count_between(self, start: float, end: float) -> dict[str, int]:
        """Events dated in (start, end], by model."""
        ...


@dataclass
class _Sample:
    at: float
    counts: dict[str, int]


class Reconciler:
    """Samples Triton each tick and judges each window once its lateness has passed."""

    def __init__(
        self,
        triton: TritonCounter,
        metered: MeteredCounter,
        models: Sequence[str],
        *,
        tolerance: int = 0,
        lateness_s: float = 10.0,
        metrics: MeteringMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.triton = triton
        self.metered = metered
        self.models = list(models)
        self.tolerance = tolerance
        self.lateness_s = lateness_s
        self.metrics = metrics
        self.clock = clock
        self._samples: list[_Sample] = []

    def sample(self) -> None:
        """Record Triton's counters now (a window boundary)."""
        self._samples.append(_Sample(self.clock(), self.triton.sample(self.models)))

    def judge_ready(self, now: float | None = None) -> list[DriftReport]:
        """Reports of every window that ended at least `lateness_s` ago, oldest first."""
        now = self.clock() if now is None else now
        reports: list[DriftReport] = []
        while len(self._samples) >= 2 and self._samples[1].at + self.lateness_s <= now:
            before, after = self._samples[0], self._samples[1]
            metered = self.metered.count_between(before.at, after.at)
            window = drift_reports(
                before.at,
                after.at,
                before.counts,
                after.counts,
                metered,
                self.models,
                self.tolerance,
            )
            for report in window:
                self._publish(report)
            reports.extend(window)
            self._samples.pop(0)
        return reports

    def _publish(self, report: DriftReport) -> None:
        if self.metrics is not None:
            self.metrics.drift.labels(report.model).set(report.drift)
            if report.drift > 0:
                self.metrics.drift_total.labels(report.model).inc(report.drift)
        fields = {
            "model": report.model,
            "window_start": round(report.start, 3),
            "window_end": round(report.end, 3),
            "triton_successes": report.triton,
            "usage_events": report.metered,
            "drift": report.drift,
        }
        if report.ok:
            log.info("reconciled", **fields)
        elif report.drift > 0:
            log.error("unmetered traffic: triton served more than was metered", **fields)
        else:
            log.warning("more usage events than triton successes", **fields)

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Sample every `interval_s` and judge windows until `stop` is set."""
        self.sample()
        while not stop.wait(interval_s):
            self.sample()
            self.judge_ready()
