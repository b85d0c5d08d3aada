"""The Grafana dashboard is current and charts only metrics the components export."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from api.app import ApiMetrics
from indexer.metrics import REGISTRY as INDEXER
from metering.metrics import MeteringMetrics
from royalty.ops.dashboard import OUTPUT, build, metric_names, render
from settlement.settler import REGISTRY as SETTLEMENT
from stream.app import REGISTRY as STREAM


def _exported(*registries: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
    return names


def test_committed_dashboard_is_current() -> None:
    assert OUTPUT.read_text() == render(), "run: python -m royalty.ops.dashboard"
    json.loads(OUTPUT.read_text())


def test_every_component_has_a_row() -> None:
    rows = [p["title"] for p in build()["panels"] if p["type"] == "row"]
    for row in ("Metering gateway", "Indexer", "Stream join", "Settlement", "Claims API"):
        assert row in rows


def test_every_charted_metric_is_exported() -> None:
    exported = _exported(
        INDEXER, STREAM, SETTLEMENT, MeteringMetrics().registry, ApiMetrics().registry
    )
    charted = metric_names(build())
    assert charted, "the dashboard charts nothing"
    assert charted <= exported, sorted(charted - exported)


def test_every_metric_is_named_after_its_component() -> None:
    exported = _exported(
        INDEXER, STREAM, SETTLEMENT, MeteringMetrics().registry, ApiMetrics().registry
    )
    components = (
        "gateway",
        "metering",
        "ingest",
        "reconciler",
        "indexer",
        "stream",
        "settlement",
        "api",
    )
    for name in exported:
        assert name.startswith(tuple(f"royalty_{c}_" for c in components)), name
