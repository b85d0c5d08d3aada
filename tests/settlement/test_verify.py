"""`royalty verify` end to end on SQLite and PostgreSQL: epochs settled from the embedded join's
accruals, committed on anvil and indexed, verify from public inputs; a tampered usage record,
a tampered allocation and a different committed root each fail the check that names them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from royalty.cli import app
from schemas.tables import metadata
from settlement.chain import System
from settlement.keccak import keccak256
from settlement.verify import EpochNotReadyError, VerifyReport, verify_epoch
from tests.contracts.contract_helpers import ChainHarness
from tests.settlement.test_epoch_inputs import Billing, billing, dist_chain, dist_system

__all__ = ["dist_chain", "dist_system"]  # fixtures, used by name

pytestmark = [pytest.mark.anvil]

_t = metadata.tables


@pytest.fixture
def world(dist_system: System, dist_chain: ChainHarness, db_url: str) -> Iterator[Billing]:
    built = billing(dist_system, dist_chain, db_url)
    yield built
    built.engine.dispose()


def _verify(world: Billing, epoch: int) -> VerifyReport:
    with world.engine.connect() as connection:
        return verify_epoch(
            connection,
            chain_id=world.chain_id,
            distributor=world.distributor,
            epoch=epoch,
            read_chain=world.system.royalty_distributor.epoch_info,
        )


def _failing(report: VerifyReport) -> set[str]:
    return {check.name for check in report.failures}


def _cli(world: Billing, tmp_path: Path, *args: str) -> tuple[int, str]:
    manifest = tmp_path / "deployment.json"
    world.system.manifest.write(manifest)
    options = ["--db-url", world.url, "--rpc-url", world.chain.anvil.rpc_url]
    result = CliRunner().invoke(app, ["verify", *args, *options, "--manifest", str(manifest)])
    return result.exit_code, result.output


def test_committed_epochs_verify(
    world: Billing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROYALTY_DATA_DIR", str(tmp_path))
    first, *_, last = world.epochs()
    with pytest.raises(EpochNotReadyError):
        _verify(world, first)
    for epoch in (first, last):
        inputs, d = world.settle(epoch)
        assert d.leaves
        computed = _verify(world, epoch)  # computed, not committed yet: database checks only
        assert computed.ok, computed.failures
        assert not any(check.name.startswith("chain") for check in computed.checks)
        world.commit(epoch, inputs, d)
        report = _verify(world, epoch)
        assert report.ok, report.failures
        names = {check.name for check in report.checks}
        assert {"db root", "db inputs_hash", "db usage_root", "chain root", "chain total"} <= names
        assert {"chain inputs_hash", "chain usage_root", "db allocations", "db carries"} <= names

    code, output = _cli(world, tmp_path, str(last), "--json")
    assert code == 0, output
    doc = json.loads(output)
    assert doc["ok"] is True
    assert doc["status"] == "committed"
    code, output = _cli(world, tmp_path, "999")
    assert code == 2, output
    assert "does not exist" in output


def test_tampering_fails_the_check_that_names_it(
    world: Billing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROYALTY_DATA_DIR", str(tmp_path))
    first, *_, last = world.epochs()
    inputs, d = world.settle(first)
    world.commit(first, inputs, d)
    assert _verify(world, first).ok

    # One usage record billed by the epoch, changed after the fact.
    events, accruals = _t["usage_events"], _t["accruals"]
    with world.engine.begin() as connection:
        usage_id = connection.execute(
            sa.select(accruals.c.usage_id).where(accruals.c.settled_epoch == first).limit(1)
        ).scalar_one()
        units = connection.execute(
            sa.select(events.c.units).where(events.c.usage_id == usage_id)
        ).scalar_one()
        connection.execute(
            events.update().where(events.c.usage_id == usage_id).values(units=units + 1)
        )
    failing = _failing(_verify(world, first))
    assert {"db usage_root", "chain usage_root", "db inputs_hash", "db fees_e6"} <= failing
    code, output = _cli(world, tmp_path, str(first))
    assert code == 1, output
    assert "MISMATCH" in output
    assert "db usage_root" in output
    with world.engine.begin() as connection:
        connection.execute(events.update().where(events.c.usage_id == usage_id).values(units=units))
    assert _verify(world, first).ok

    # One allocation (leaf) changed in the database.
    allocations = _t["epoch_allocations"]
    leaf = d.leaves[0]
    with world.engine.begin() as connection:
        connection.execute(
            allocations.update()
            .where(allocations.c.epoch_id == first, allocations.c.leaf_index == leaf.index)
            .values(amount=leaf.amount + 1)
        )
    assert _failing(_verify(world, first)) == {"db allocations"}

    # The next epoch computed correctly, but a different root committed on-chain.
    inputs, d = world.settle(last)
    world.commit(last, inputs, d, root=keccak256(b"not the computed root"))
    report = _verify(world, last)
    assert _failing(report) == {"chain root", "chain event root"}
    assert report.check("chain root").expected == "0x" + d.root.hex()
