"""One indexer per database and chain: a second follower is refused while the first holds the
lease, takes over once it expired, was released, or its holder process died on this host; a
follower whose lease was taken over cannot commit anything more."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.pool import NullPool

from indexer.errors import IndexerLeaseHeldError, IndexerLeaseLostError
from indexer.follower import Follower
from indexer.lease import Lease
from indexer.store import IndexerStore
from schemas.engine import create_engine
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import MODEL_A, fresh_index, index_to_head, make_follower, table_rows

pytestmark = [pytest.mark.anvil]


def _follower(system: System, chain: ChainHarness, url: str, ttl_s: float = 30.0) -> Follower:
    follower = make_follower(system, [chain.anvil.rpc_url], url)
    follower.config = dataclasses.replace(follower.config, lease_ttl_s=ttl_s)
    return follower


def _register(system: System, chain: ChainHarness, model_id: int) -> None:
    a = chain.actors
    system.model_registry.register_model(a.operator, model_id, a.operator.address, "m")


def test_a_second_follower_is_refused_until_the_first_releases(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str
) -> None:
    system, chain = ix_system, ix_chain
    _register(system, chain, MODEL_A)
    first, second = (_follower(system, chain, migrated_url) for _ in range(2))
    index_to_head(first)
    with pytest.raises(IndexerLeaseHeldError, match=f"already being indexed.*pid {os.getpid()}"):
        second.step()
    with pytest.raises(IndexerLeaseHeldError):
        second.run(stop_at_head=True)  # refused before doing anything
    _register(system, chain, MODEL_A + 1)
    index_to_head(first)  # the holder goes on
    first.release_lease()
    index_to_head(second)
    with pytest.raises(IndexerLeaseHeldError):
        first.step()
    for follower in (first, second):
        follower.engine.dispose()


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_commit(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str, sqlite_migrated: str
) -> None:
    system, chain = ix_system, ix_chain
    _register(system, chain, MODEL_A)
    stalled = _follower(system, chain, migrated_url, ttl_s=0.2)
    index_to_head(stalled)
    time.sleep(0.3)  # the holder stalls past its lease
    _register(system, chain, MODEL_A + 1)
    successor = _follower(system, chain, migrated_url)
    index_to_head(successor)
    _register(system, chain, MODEL_A + 2)
    with pytest.raises(IndexerLeaseLostError, match="taken over"):
        stalled.step()  # fenced: its transaction rolled back
    index_to_head(successor)
    assert table_rows(migrated_url) == fresh_index(system, chain.anvil.rpc_url, sqlite_migrated)
    for follower in (stalled, successor):
        follower.engine.dispose()


def _write_lease(url: str, chain_id: int, lease: Lease) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            store = IndexerStore(connection, chain_id)
            assert store.write_lease(lease, None, datetime.now(UTC))
    finally:
        engine.dispose()


def test_the_lease_of_a_crashed_indexer_on_this_host_is_taken_at_once(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str
) -> None:
    system, chain = ix_system, ix_chain
    _register(system, chain, MODEL_A)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no process has any more
    far = time.time() + 3600
    crashed = Lease(owner="crashed", host=socket.gethostname(), pid=gone.pid, expires_at=far)
    _write_lease(migrated_url, system.manifest.chain_id, crashed)
    follower = _follower(system, chain, migrated_url)
    index_to_head(follower)  # no wait for the hour-long lease
    follower.release_lease()
    elsewhere = dataclasses.replace(crashed, owner="remote", host="another-host")
    _write_lease(migrated_url, system.manifest.chain_id, elsewhere)
    with pytest.raises(IndexerLeaseHeldError, match="another-host"):
        follower.step()
    follower.engine.dispose()


def test_a_second_indexer_process_exits_with_a_clear_error(
    ix_system: System, ix_chain: ChainHarness, sqlite_migrated: str, manifest_path: Path
) -> None:
    system, chain = ix_system, ix_chain
    _register(system, chain, MODEL_A)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROYALTY_")}
    env.update(
        ROYALTY_DB_URL=sqlite_migrated,
        ROYALTY_CHAIN_RPC_URLS=f'["{chain.anvil.rpc_url}"]',
        ROYALTY_CHAIN_MANIFEST_PATH=str(manifest_path),
        ROYALTY_CHAIN_POLL_INTERVAL_S="0.05",
        ROYALTY_BUS="memory",
        ROYALTY_DATA_DIR=str(manifest_path.parent),
        ROYALTY_LOG_LEVEL="warning",
    )
    command = [sys.executable, "-m", "royalty.commands.indexer", "run"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        engine = create_engine(sqlite_migrated, poolclass=NullPool)
        deadline = time.monotonic() + 60
        while True:  # until the first one holds the lease
            with engine.connect() as connection:
                if IndexerStore(connection, system.manifest.chain_id).lease() is not None:
                    break
            assert first.poll() is None, first.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        engine.dispose()
        second = subprocess.run(
            [*command, "--stop-at-head"], env=env, capture_output=True, timeout=120, check=False
        )
        assert second.returncode == 2
        stderr = " ".join(second.stderr.decode().split())  # the message is wrapped to a width
        assert "Traceback" not in stderr
        assert f"already being indexed into this database by pid {first.pid}" in stderr
        assert first.poll() is None  # the first one is unaffected
    finally:
        first.terminate()
        first.wait(timeout=30)
