"""The reconciler finds traffic sent to Triton around the gateway (real Triton and Kafka)."""

from __future__ import annotations

import time

import httpx
import pytest

from deploy.local import TritonServer
from metering.metrics import MeteringMetrics
from metering.reconciler import DriftReport, Reconciler, drift_reports
from metering.reconciler_sources import (
    TritonMetricsCounter,
    UsageTopicCounter,
    parse_success_counts,
)
from metering.settings import billing_table
from tests.metering.harness import MeteringNode, consume_events, echo_body, running_gateway


@pytest.mark.kafka
@pytest.mark.triton
def test_reconciler_detects_traffic_around_the_gateway(
    node: MeteringNode, triton_server: TritonServer
) -> None:
    settings = node.settings()
    billing = billing_table(settings.metering)
    models = ["echo-lm", "doubler"]
    counter = UsageTopicCounter(node.bootstrap, node.topic, billing).start()
    metrics = MeteringMetrics()
    reconciler = Reconciler(
        TritonMetricsCounter(triton_server.metrics_url),
        counter,
        models,
        lateness_s=1.0,
        metrics=metrics,
    )
    try:
        with running_gateway(node) as gw:
            # Window 1: everything through the gateway.
            reconciler.sample()
            for i in range(12):
                r = httpx.post(
                    f"{gw.url}/v2/models/echo-lm/infer",
                    json=echo_body(f"metered {i}"),
                    headers={"x-api-key": node.key(101)},
                    timeout=30,
                )
                assert r.status_code == 200
            time.sleep(0.3)
            reconciler.sample()
            # Window 2: five requests straight to Triton, around metering.
            for i in range(5):
                r = httpx.post(
                    f"http://{triton_server.http_url}/v2/models/echo-lm/infer",
                    json=echo_body(f"bypass {i}"),
                    timeout=30,
                )
                assert r.status_code == 200
            r = httpx.post(
                f"{gw.url}/v2/models/echo-lm/infer",
                json=echo_body("metered again"),
                headers={"x-api-key": node.key(102)},
                timeout=30,
            )
            assert r.status_code == 200
            time.sleep(0.3)
            reconciler.sample()
        consume_events(node.bootstrap, node.topic, 13)  # all delivered before judging
        time.sleep(1.0)
        reports = reconciler.judge_ready()
    finally:
        counter.stop()
    by_window: dict[float, dict[str, DriftReport]] = {}
    for report in reports:
        by_window.setdefault(report.start, {})[report.model] = report
    first, second = (by_window[k] for k in sorted(by_window))
    assert (first["echo-lm"].triton, first["echo-lm"].metered) == (12, 12)
    assert first["echo-lm"].ok
    assert (second["echo-lm"].triton, second["echo-lm"].metered) == (6, 1)
    assert second["echo-lm"].drift == 5
    assert not second["echo-lm"].ok
    assert second["doubler"].drift == 0
    exported = metrics.registry.get_sample_value(
        "royalty_reconciler_unmetered_total", {"model": "echo-lm"}
    )
    assert exported == 5.0


def test_drift_reports_are_pure_arithmetic() -> None:
    reports = drift_reports(
        0.0, 10.0, {"a": 5, "b": 7}, {"a": 9, "b": 7, "c": 1}, {"a": 3, "b": 1}, ["a", "b"], 1
    )
    assert [(r.model, r.triton, r.metered, r.drift, r.ok) for r in reports] == [
        ("a", 4, 3, 1, True),
        ("b", 0, 1, -1, True),
    ]
    # A counter that went down means Triton restarted: count from zero.
    (restarted,) = drift_reports(0, 1, {"a": 50}, {"a": 3}, {"a": 3}, ["a"])
    assert restarted.drift == 0


def test_parse_success_counts_sums_versions() -> None:
    text = (
        "# HELP nv_inference_request_success Number of successful inference requests\n"
        "# TYPE nv_inference_request_success counter\n"
        'nv_inference_request_success{model="m",version="1"} 4\n'
        'nv_inference_request_success{model="m",version="2"} 3\n'
        'nv_inference_request_success{model="other",version="1"} 9\n'
        'nv_inference_count{model="m",version="1"} 100\n'
    )
    assert parse_success_counts(text, ["m", "absent"]) == {"m": 7, "absent": 0}
