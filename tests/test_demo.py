"""The README's first command, end to end on the real services (one round of traffic)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from royalty.demo.run import run_demo

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.anvil, pytest.mark.triton]


def test_demo_meters_every_inference_exactly_once(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    report = run_demo(tmp_path / "demo", rounds=2, console=console)
    inferences = sum(report.inferences.values())
    assert inferences == 2 * 5
    assert len(report.events) == inferences
    assert len({e.id for e in report.events}) == inferences
    assert report.bad_signatures == 0
    assert sum(report.refused.values()) == 3
    assert report.indexed["chain_license_terms"] == 5
    assert report.indexed["chain_stakes"] == 4
    text = console.export_text()
    assert "every inference metered exactly once" in text
