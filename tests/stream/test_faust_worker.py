"""The faust worker (`python -m stream.faust_app`) on real Kafka, anvil and PostgreSQL: the
ground-truth scenario gives the scenario's accruals and rejects, exactly the embedded runner's;
held events wait for the watermark; SIGKILLed mid-stream and restarted, it decides every usage
id exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from deploy.local import KafkaBroker
from metering.keyfiles import write_json_atomic
from schemas import migrate
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.stream.scenario import EPOCH_S, Script, build
from tests.stream.test_embedded import _check
from tests.stream.test_kafka_worker import _consumed, _embedded_accruals, _worker_accruals
from tests.stream.worker_support import (
    ROOT,
    Topics,
    decided_count,
    expected_totals,
    index_into_topic,
    produce_usage,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.anvil, pytest.mark.postgres, pytest.mark.slow]


def spawn_engine(
    module: str,
    script: Script,
    servers: str,
    url: str,
    chain_id: int,
    t: Topics,
    tmp: Path,
    *,
    instance: str = "1",
    max_records: int = 3,
    session_timeout_ms: int = 10_000,
) -> subprocess.Popen[bytes]:
    """`python -m <module>` (`stream.app` or `stream.faust_app`) in a subprocess, with its
    own static member id `instance`; its output goes to `tmp / worker-<instance>.log`."""
    ring = tmp / "keyring.json"
    if not ring.exists():
        write_json_atomic(ring, script.key_ring.to_json())
    args = [
        sys.executable, "-m", module,
        "--bootstrap-servers", servers, "--db-url", url, "--chain-id", str(chain_id),
        "--key-ring", str(ring), "--epoch-length", str(EPOCH_S),
        "--epoch-genesis", str(script.genesis), "--usage-topic", t.usage,
        "--chain-topic", t.chain, "--accruals-topic", t.accruals,
        "--dead-letter-topic", t.dead_letter, "--group-id", t.group,
        "--component", t.component, "--max-records", str(max_records),
        "--instance-id", f"{t.group}-{instance}",
        "--session-timeout-ms", str(session_timeout_ms),
    ]  # fmt: skip
    log = (tmp / f"worker-{instance}.log").open("ab")
    return subprocess.Popen(
        args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
    )


def assert_each_usage_id_once(engine: Engine) -> None:
    """No usage id billed twice, nor both billed and rejected after the chain."""
    accruals = metadata.tables["accruals"]
    with engine.connect() as connection:
        repeated = connection.execute(
            sa.select(accruals.c.usage_id).group_by(accruals.c.usage_id).having(sa.func.count() > 1)
        ).all()
    assert repeated == []


def stop(process: subprocess.Popen[bytes], log: Path) -> int:
    """SIGTERM, and an exit within 30 s (the log tells why not); the exit status."""
    if process.poll() is not None:
        return process.returncode
    process.terminate()
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise AssertionError(f"worker ignored SIGTERM:\n{log.read_text()[-3000:]}") from None
    return code


def test_faust_worker_matches_scenario_and_embedded_runner(
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    migrate.upgrade(pg_url)
    servers, topics = kafka_broker.bootstrap_servers, Topics.unique()
    chain_id = st_system.manifest.chain_id
    script = build(st_system, st_chain)
    # The chain as scripted, not yet past the last usage times: the newest events are held.
    index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
    produce_usage(servers, topics.usage, script.messages)
    process = spawn_engine("stream.faust_app", script, servers, pg_url, chain_id, topics, tmp_path)
    log = tmp_path / "worker-1.log"
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        wait_for(
            lambda: _consumed(pg_url, topics.component)[0] == len(script.messages),
            60,
            "every usage message consumed",
        )
        assert _consumed(pg_url, topics.component)[1] > 0, "no event waits for the chain"
        st_chain.advance_time(script.last_time - st_chain.now() + 5)
        index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 60, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (len(script.messages), 0)
        assert process.poll() is None, log.read_text()[-3000:]
        assert stop(process, log) == 0, "no graceful stop on SIGTERM"
    finally:
        stop(process, log)
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()
    embedded = _embedded_accruals(script, st_system, st_chain, f"sqlite:///{tmp_path / 'e.db'}")
    assert _worker_accruals(pg_url) == embedded


def test_faust_worker_sigkilled_mid_stream_and_restarted(
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    migrate.upgrade(pg_url)
    servers, topics = kafka_broker.bootstrap_servers, Topics.unique()
    chain_id = st_system.manifest.chain_id
    script = build(st_system, st_chain)
    st_chain.advance_time(script.last_time - st_chain.now() + 5)
    index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
    engine = create_engine(pg_url, poolclass=NullPool)
    chunks = [script.messages[i::3] for i in range(3)]
    produced = 0
    for chunk in chunks:
        produce_usage(servers, topics.usage, chunk)
        produced += len(chunk)
        process = spawn_engine(
            "stream.faust_app", script, servers, pg_url, chain_id, topics, tmp_path
        )
        before = sum(decided_count(engine))
        try:
            # Killed once it has committed something of this chunk: mid-stream, not at rest.
            wait_for(lambda b=before: sum(decided_count(engine)) > b, 60, "worker progress")  # type: ignore[misc]
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    process = spawn_engine("stream.faust_app", script, servers, pg_url, chain_id, topics, tmp_path)
    try:
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 90, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (produced, 0)
    finally:
        stop(process, tmp_path / "worker-1.log")
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()


def test_faust_worker_stops_on_a_failing_database(
    pg_url: str, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    # Not migrated: the first checkpoint read fails. The worker must stop with an error (its
    # restart re-reads from the checkpoint), never skip the batch and go on.
    servers, topics = kafka_broker.bootstrap_servers, Topics.unique()
    produce_usage(servers, topics.usage, [b"{not json"])
    process = spawn_engine("stream.faust_app", Script(), servers, pg_url, 1, topics, tmp_path)
    try:
        code = process.wait(timeout=60)
    finally:
        stop(process, tmp_path / "worker-1.log")
    assert code != 0
    assert "checkpoints" in (tmp_path / "worker-1.log").read_text()
