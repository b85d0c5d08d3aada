"""The README's first command, end to end on the real services (a short run): from inference
through epochs committed on-chain to a contributor's claim through the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from royalty.demo.run import run_demo

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.anvil, pytest.mark.triton]


def test_demo_meters_and_decides_every_inference_once(tmp_path: Path) -> None:
    console = Console(record=True, width=140)
    report = run_demo(tmp_path / "demo", rounds=2, console=console)
    inferences = sum(report.inferences.values())
    assert inferences == 2 * 5
    assert len(report.events) == inferences
    assert len({e.id for e in report.events}) == inferences
    assert sum(report.refused.values()) == 3
    assert report.indexed["chain_license_terms"] == 5
    assert report.indexed["chain_stakes"] == 4
    # Decisions: alice, bob and carol's doubler license are billed for every inference; carol's
    # expired license never; bob's revoked doubler license only before the revocation.
    assert report.billed[1] == report.billed[2] == report.billed[3] == 2
    assert report.billed[4] == 0
    assert report.rejects["expired"] == 2
    assert report.billed[5] + report.rejects["revoked"] == 2
    assert report.rejects["bad_signature"] == 1
    assert report.rejects["duplicate"] == 1
    assert report.rejects["malformed"] == 1
    assert report.held == 0
    # Fees are exact integers: units x price, in 10^-6 base units.
    echo_units = {e.data.license_id: 0 for e in report.events}
    for e in report.events:
        echo_units[e.data.license_id] += e.data.units
    assert report.fees_e6[1] == echo_units[1] * 2_500 * 10**6  # 0.0025 dUSD per token
    assert report.fees_e6[3] == echo_units[3] * 40_000 * 10**6  # 0.04 dUSD per item
    text = console.export_text()
    assert "every inference metered once and decided once" in text
    # Settlement: every epoch with usage committed, verified, and paid out to the 10^-6 unit.
    pay = report.payout
    assert pay.epochs
    assert all(line.status == "claimable" for line in pay.epochs)
    assert all(line.verified for line in pay.epochs if line.tx_hash)
    assert pay.fees_e6 == sum(report.fees_e6.values())
    assert pay.fees_e6 == 10**6 * pay.committed_total + sum(pay.carries_e6.values())
    assert sum(pay.paid.values()) == pay.committed_total
    # The claim: one transaction from the API's calldata paid exactly, a second one reverts.
    assert pay.claimed > 0
    assert pay.balance_delta == pay.claimed
    assert pay.second_claim_reverted
    assert pay.reconciles
