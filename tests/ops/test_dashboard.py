"""The Grafana dashboard is current and charts only metrics the components export."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from indexer.metrics import REGISTRY as INDEXER
from metering.metrics import MeteringMetrics
from royalty.ops.dashboard import OUTPUT, build, metric_names, render
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


def test_every_charted_metric_is_exported() -> None:
    exported = _exported(INDEXER, STREAM, MeteringMetrics().registry)
    charted = metric_names(build())
    assert charted, "the dashboard charts nothing"
    assert charted <= exported, sorted(charted - exported)


def test_every_metric_is_named_after_its_component() -> None:
    exported = _exported(INDEXER, STREAM, MeteringMetrics().registry)
    components = ("gateway", "metering", "ingest", "reconciler", "indexer", "stream")
    for name in exported:
        assert name.startswith(tuple(f"royalty_{c}_" for c in components)), name
