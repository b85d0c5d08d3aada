"""Fault injection: a flaky RPC (errors, timeouts, "too many results", truncated replies, a dead
first endpoint) and SIGKILLs of the indexer process at random points. Either way the final
state equals a fresh index of the chain: nothing missing, nothing twice."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from sqlalchemy.pool import NullPool

from deploy.local import KafkaBroker
from deploy.local.process import free_port
from indexer.messages import CHAIN_EVENT_TYPE, CHAIN_WATERMARK_TYPE, TYPE_HEADER
from indexer.rpc import RetryPolicy
from indexer.store import IndexerStore
from schemas.engine import create_engine
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.flaky_rpc import Faults, FlakyRpcProxy
from tests.indexer.support import (
    MODEL_A,
    column,
    fresh_index,
    fund_stakers,
    make_follower,
    scripted_history,
    table_rows,
)

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _busy_chain(system: System, chain: ChainHarness, stakes: int) -> None:
    """The scripted history plus many small stakes (one block each)."""
    scripted_history(system, chain)
    a = chain.actors
    fund_stakers(system, chain, [a.carol])
    for i in range(stakes):
        system.staking.stake(a.carol if i % 3 else a.bob, MODEL_A, 1 + i)


def test_flaky_rpc_with_failover_still_indexes_everything(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str, sqlite_migrated: str
) -> None:
    system, chain = ix_system, ix_chain
    _busy_chain(system, chain, stakes=40)
    proxy = FlakyRpcProxy(chain.anvil.rpc_url, Faults()).start()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every call fails over
    try:
        follower = make_follower(
            system,
            [dead, proxy.url],
            migrated_url,
            confirmations=2,
            max_block_range=64,
            retry=RetryPolicy(attempts=60, base_delay_s=0.001, max_delay_s=0.02),
            rpc_timeout_s=0.5,
        )
        follower.config = dataclasses.replace(follower.config, retry_delay_s=0.01)
        follower.run(stop_at_head=True)
    finally:
        proxy.stop()
    counts = proxy.faults.counts
    assert counts["too_many_results"] > 0
    assert counts["truncated"] > 0
    assert counts["server_error"] > 0
    assert counts["slow"] > 0
    assert table_rows(migrated_url) == fresh_index(system, chain.anvil.rpc_url, sqlite_migrated)
    follower.engine.dispose()


def _indexer_env(
    db_url: str, rpc_url: str, manifest: Path, broker: KafkaBroker, topic: str, data: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROYALTY_")}
    env.update(
        ROYALTY_DB_URL=db_url,
        ROYALTY_CHAIN_RPC_URLS=f'["{rpc_url}"]',
        ROYALTY_CHAIN_MANIFEST_PATH=str(manifest),
        ROYALTY_CHAIN_CONFIRMATIONS="2",
        ROYALTY_CHAIN_MAX_BLOCK_RANGE="3",
        ROYALTY_CHAIN_POLL_INTERVAL_S="0.05",
        ROYALTY_BUS="kafka",
        ROYALTY_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        ROYALTY_KAFKA_CHAIN_TOPIC=topic,
        ROYALTY_DATA_DIR=str(data),
        ROYALTY_LOG_LEVEL="warning",
    )
    return env


def _indexer(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "royalty.commands.indexer", "run", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _indexed_block(db_url: str, chain_id: int) -> int:
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            checkpoint = IndexerStore(connection, chain_id).checkpoint()
            return -1 if checkpoint is None else checkpoint.block_number
    finally:
        engine.dispose()


def test_sigkill_at_random_points_then_restart_gives_the_same_state(
    ix_system: System,
    ix_chain: ChainHarness,
    migrated_url: str,
    sqlite_migrated: str,
    manifest_path: Path,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    system, chain = ix_system, ix_chain
    _busy_chain(system, chain, stakes=60)
    topic = f"chain-{uuid.uuid4().hex[:8]}"
    env = _indexer_env(
        migrated_url, chain.anvil.rpc_url, manifest_path, kafka_broker, topic, tmp_path
    )
    rng = random.Random(4)
    kills, progress = 0, []
    for round_ in range(12):
        process = _indexer(env, tmp_path)
        for i in range(8):  # the chain moves on while the indexer runs
            system.staking.stake(chain.actors.carol, MODEL_A, 1000 + 10 * round_ + i)
        time.sleep(rng.uniform(0.5, 2.5))  # startup is ~1 s: kill before, during and after it
        if round_ % 4 == 3:
            # Some kills only once the checkpoint moved: on a loaded machine startup alone can
            # outlast every random delay, and the test must still see progress between kills.
            before = progress[-1] if progress else -1
            deadline = time.monotonic() + 90
            while _indexed_block(migrated_url, system.manifest.chain_id) <= before:
                assert process.poll() is None, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the indexer made no progress in 90 s"
                time.sleep(0.1)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
        progress.append(_indexed_block(migrated_url, system.manifest.chain_id))
    assert kills >= 10
    assert progress[-1] > progress[0] >= -1  # it made progress between kills
    final = _indexer(env, tmp_path, "--stop-at-head")
    _, stderr = final.communicate(timeout=240)
    assert final.returncode == 0, stderr.decode()[-3000:]

    state = table_rows(migrated_url)
    assert state == fresh_index(system, chain.anvil.rpc_url, sqlite_migrated)
    event_ids = column(state["chain_events"], "event_id")
    assert len(event_ids) == len(set(event_ids)) > 150

    # Kafka: every event published at least once (duplicates are allowed, and identical).
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        group_id=f"check-{uuid.uuid4().hex}",
    )
    published: dict[str, set[bytes]] = {}
    watermarks = 0
    for record in consumer:
        kind = dict(record.headers)[TYPE_HEADER].decode()
        if kind == CHAIN_EVENT_TYPE:
            published.setdefault(record.key.decode(), set()).add(record.value)
        elif kind == CHAIN_WATERMARK_TYPE:
            watermarks += 1
    consumer.close()
    assert set(published) == set(event_ids)
    assert all(len(values) == 1 for values in published.values())  # re-sends are byte-identical
    assert watermarks > 0
