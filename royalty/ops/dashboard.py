"""The Grafana dashboard of a deployment, generated from one list of panels.

`deploy/grafana/royalty-engine.json` is this module's output (`python -m royalty.ops.dashboard`
rewrites it; a test checks that it is current and that every metric it charts is one the
components export). Every metric is named `royalty_<component>_<what>`.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "royalty-engine.json"


@dataclass(frozen=True)
class Panel:
    """One time-series panel: a title, PromQL expressions (legend, expr) and a unit."""

    title: str
    targets: tuple[tuple[str, str], ...]
    unit: str = "short"


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Metering gateway",
        (
            Panel(
                "Inference requests/s by status",
                (("{{code}}", "sum by (code) (rate(royalty_gateway_requests_total[1m]))"),),
                "reqps",
            ),
            Panel(
                "Gateway latency p50 / p99; Triton's and the usage event's shares",
                (
                    (
                        "gateway p50",
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(royalty_gateway_request_seconds_bucket[5m])))",
                    ),
                    (
                        "gateway p99",
                        "histogram_quantile(0.99, sum by (le) "
                        "(rate(royalty_gateway_request_seconds_bucket[5m])))",
                    ),
                    (
                        "triton p99",
                        "histogram_quantile(0.99, sum by (le) "
                        "(rate(royalty_gateway_upstream_seconds_bucket[5m])))",
                    ),
                    (
                        "durable event p99 ({{delivery}})",
                        "histogram_quantile(0.99, sum by (le, delivery) "
                        "(rate(royalty_metering_durable_seconds_bucket[5m])))",
                    ),
                ),
                "s",
            ),
            Panel(
                "Usage events/s by delivery",
                (
                    (
                        "{{delivery}}",
                        "sum by (delivery) (rate(royalty_metering_events_total[1m]))",
                    ),
                ),
                "ops",
            ),
            Panel(
                "Spool depth (events Kafka has not acked) and Kafka errors",
                (
                    ("depth", "sum(royalty_metering_spool_depth)"),
                    ("kafka errors/s", "sum(rate(royalty_metering_kafka_errors_total[5m]))"),
                ),
            ),
            Panel(
                "Unmetered inferences (reconciler)",
                (("{{model}}", "sum by (model) (royalty_reconciler_unmetered_total)"),),
            ),
            Panel(
                "Auth failures/s",
                (("{{code}}", "sum by (code) (rate(royalty_gateway_auth_failures_total[5m]))"),),
                "ops",
            ),
        ),
    ),
    (
        "Indexer",
        (
            Panel(
                "Blocks behind the head",
                (("lag", "royalty_indexer_lag_blocks"),),
            ),
            Panel(
                "Indexed and finalized block",
                (
                    ("indexed", "royalty_indexer_indexed_block"),
                    ("finalized", "royalty_indexer_finalized_block"),
                    ("head", "royalty_indexer_chain_head_block"),
                ),
            ),
            Panel(
                "Chain events/s by kind",
                (("{{kind}}", "sum by (kind) (rate(royalty_indexer_events_total[1m]))"),),
                "ops",
            ),
            Panel(
                "Reorgs and RPC errors",
                (
                    ("reorgs", "increase(royalty_indexer_reorgs_total[1h])"),
                    ("rpc errors", "sum(increase(royalty_indexer_rpc_errors_total[1h]))"),
                ),
            ),
        ),
    ),
    (
        "Stream join",
        (
            Panel(
                "Usage decided/s by outcome",
                (
                    (
                        "{{outcome}}",
                        "sum by (outcome) (rate(royalty_stream_decided_total[1m]))",
                    ),
                ),
                "ops",
            ),
            Panel(
                "Events held for the finalized chain",
                (("held", "sum(royalty_stream_held_events)"),),
            ),
            Panel(
                "Finalized block seen by the workers",
                (("{{instance}}", "royalty_stream_chain_finalized_block"),),
            ),
        ),
    ),
    (
        "Settlement",
        (
            Panel(
                "Epochs by status",
                (("{{status}}", "sum by (status) (royalty_settlement_epochs)"),),
            ),
            Panel(
                "Last committed epoch",
                (("committed", "max(royalty_settlement_last_committed_epoch)"),),
            ),
            Panel(
                "Commit time p50 / p99 (approve, commit, receipts)",
                (
                    (
                        "p50",
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(royalty_settlement_commit_seconds_bucket[1h])))",
                    ),
                    (
                        "p99",
                        "histogram_quantile(0.99, sum by (le) "
                        "(rate(royalty_settlement_commit_seconds_bucket[1h])))",
                    ),
                ),
                "s",
            ),
        ),
    ),
    (
        "Claims API",
        (
            Panel(
                "Requests/s by status",
                (("{{status}}", "sum by (status) (rate(royalty_api_requests_total[1m]))"),),
                "reqps",
            ),
            Panel(
                "Latency p99 by route",
                (
                    (
                        "{{route}}",
                        "histogram_quantile(0.99, sum by (le, route) "
                        "(rate(royalty_api_request_seconds_bucket[5m])))",
                    ),
                ),
                "s",
            ),
            Panel(
                "Rate-limited and server errors/s",
                (
                    (
                        "429",
                        'sum(rate(royalty_api_requests_total{status="429"}[5m]))',
                    ),
                    (
                        "5xx",
                        'sum(rate(royalty_api_requests_total{status=~"5.."}[5m]))',
                    ),
                ),
                "reqps",
            ),
        ),
    ),
)


def _target(ref: str, legend: str, expr: str) -> dict[str, Any]:
    return {
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
    }


def build() -> dict[str, Any]:
    """The dashboard document (Grafana JSON model, schema version 39)."""
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "type": "row",
                "id": panel_id,
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        for i, panel in enumerate(row_panels):
            panels.append(
                {
                    "type": "timeseries",
                    "id": panel_id,
                    "title": panel.title,
                    "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                    "targets": [
                        _target(chr(ord("A") + j), legend, expr)
                        for j, (legend, expr) in enumerate(panel.targets)
                    ],
                }
            )
            panel_id += 1
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "uid": "royalty-engine",
        "title": "Royalty engine",
        "tags": ["royalty"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def metric_names(document: dict[str, Any]) -> set[str]:
    """Base names of the metrics the dashboard's expressions read (suffixes stripped)."""
    names: set[str] = set()
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\broyalty_[a-z0-9_]+", target["expr"]):
                for suffix in _SUFFIXES:
                    if name.endswith(suffix):
                        name = name[: -len(suffix)]
                        break
                names.add(name)
    return names


def render() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(build(), indent=2) + "\n"


def main() -> None:
    """Write the dashboard file."""
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")


if __name__ == "__main__":
    main()
