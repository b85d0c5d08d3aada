"""`royalty settle --once` SIGKILLed around its commit transaction, then restarted: exactly one
commit on chain, recorded once, with the nonce it was first signed with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from settlement.chain import System
from settlement.committer import CRASH_ENV, CRASH_POINTS
from tests.contracts.contract_helpers import ChainHarness
from tests.settlement import settler_support
from tests.settlement.settler_support import (
    LATENESS_S,
    World,
    build_world,
    epoch_rows,
    rows,
)

# The settler tests' fixtures.
st_anvil = settler_support.st_anvil
st_system = settler_support.st_system
st_chain = settler_support.st_chain
st_db = settler_support.st_db

pytestmark = [pytest.mark.slow, pytest.mark.anvil]
REPO = Path(__file__).resolve().parents[2]
CONFIRMATIONS = 2
"""The settler's confirmation depth here: a commit counts once this many blocks are on top."""


@pytest.fixture
def world(st_system: System, st_chain: ChainHarness, st_db: str) -> Iterator[World]:
    w = build_world(st_system, st_chain, st_db)
    yield w
    w.close()


def _settle_once(world: World, tmp_path: Path, crash_at: str | None) -> int:
    manifest = tmp_path / "deployment.json"
    world.system.manifest.write(manifest)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROYALTY_")}
    env.update(
        ROYALTY_DATA_DIR=str(tmp_path / "data"),
        ROYALTY_CHAIN_SETTLER_PRIVATE_KEY="0x" + bytes(world.actors.settler.key).hex(),
        ROYALTY_CHAIN_CONFIRMATIONS=str(CONFIRMATIONS),
    )
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    command = [
        sys.executable,
        "-m",
        "royalty.cli",
        "settle",
        "--once",
        f"--db-url={world.url}",
        f"--rpc-url={world.chain.anvil.rpc_url}",
        f"--manifest={manifest}",
        f"--epoch-length={world.clock.length_s}",
        f"--genesis={world.clock.genesis_s}",
        f"--allowed-lateness={LATENESS_S}",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=120)
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(done.stderr.decode()[-4000:])
    return done.returncode


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_commit_survives_a_kill(world: World, tmp_path: Path, crash_at: str) -> None:
    distributor, w3 = world.system.royalty_distributor, world.chain.w3
    settler = world.actors.settler.address
    world.accrue(0, [(10, 40), (20, 3)])
    world.accrue(1, [(LATENESS_S, 1)])
    world.advance_to(world.clock.end_of(0) + 1)
    nonce_before = w3.eth.get_transaction_count(settler)

    assert _settle_once(world, tmp_path, crash_at) == -signal.SIGKILL
    [signed] = [t for t in rows(world.engine, "settlement_txs") if t["kind"] == "commit"]
    on_chain = distributor.epoch_info(0).root != bytes(32)
    assert on_chain == (crash_at != "before_send")
    assert signed["state"] == ("mined" if crash_at == "after_record" else "signed")
    assert epoch_rows(world.engine)[0]["status"] == "computed"

    # The restart sends (or finds) the one signed commit; it counts once buried.
    assert _settle_once(world, tmp_path, None) == 0
    assert epoch_rows(world.engine)[0]["status"] == "computed"
    world.chain.mine(CONFIRMATIONS)
    assert _settle_once(world, tmp_path, None) == 0
    epoch = epoch_rows(world.engine)[0]
    assert epoch["status"] == "committed"
    commits = [t for t in rows(world.engine, "settlement_txs") if t["kind"] == "commit"]
    assert len(commits) == 1  # recorded once, never re-signed
    [commit] = commits
    assert (commit["tx_hash"], commit["nonce"]) == (signed["tx_hash"], signed["nonce"])
    assert commit["state"] == "mined"
    assert epoch["tx_hash"] == commit["tx_hash"]
    assert epoch["block_number"] == commit["block_number"]
    event = distributor.contract.events.EpochCommitted()
    logs = [log for log in event.get_logs(from_block=0) if log["args"]["epoch"] == 0]
    assert len(logs) == 1
    assert "0x" + bytes(logs[0]["transactionHash"]).hex() == commit["tx_hash"]
    info = distributor.epoch_info(0)
    assert "0x" + info.root.hex() == epoch["root"]
    assert info.claimable_at == epoch["claimable_at"]
    # approve + commit: no second nonce was used for the commit.
    assert w3.eth.get_transaction_count(settler) == nonce_before + 2
    assert commit["nonce"] == nonce_before + 1

    # A further run changes nothing.
    assert _settle_once(world, tmp_path, None) == 0
    assert len([t for t in rows(world.engine, "settlement_txs") if t["kind"] == "commit"]) == 1
    assert w3.eth.get_transaction_count(settler) == nonce_before + 2
