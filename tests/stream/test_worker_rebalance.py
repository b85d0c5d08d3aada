"""Stream workers sharing one consumer group on real Kafka, anvil and PostgreSQL: two workers
split the usage partitions; one SIGKILLed mid-stream hands its partitions to the other; the
broker restarted mid-stream; every usage id is decided exactly once throughout.

Run for both engines (`stream.app` on kafka-python, `stream.faust_app` on faust): the database
checkpoint, not the consumer group's offsets, carries the guarantee in both."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError
from sqlalchemy.pool import NullPool

from deploy.local import KafkaBroker
from schemas import migrate
from schemas.engine import create_engine
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.stream.scenario import build
from tests.stream.test_embedded import _check
from tests.stream.test_kafka_worker import _consumed, _published_scenario
from tests.stream.worker_support import (
    ENGINES,
    Topics,
    assert_each_usage_id_once,
    decided_count,
    expected_totals,
    index_into_topic,
    produce_usage,
    spawn_engine,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.anvil, pytest.mark.postgres, pytest.mark.slow]

SESSION_TIMEOUT_MS = 6_000
"""The broker's minimum: a SIGKILLed static member's partitions move after this long."""


def _member_partitions(member: dict[str, Any], topic: str) -> set[int]:
    assignment = member.get("member_assignment") or {}
    if not isinstance(assignment, dict):
        return set()
    owned: set[int] = set()
    for entry in assignment.get("assigned_partitions") or []:
        if entry.get("topic") == topic:
            owned.update(int(p) for p in entry.get("partitions") or [])
    return owned


def group_assignment(servers: str, group: str, topic: str) -> dict[str, set[int]]:
    """`topic`'s partitions per static member id of `group`, as the coordinator tells."""
    admin = KafkaAdminClient(bootstrap_servers=servers.split(","))
    try:
        described = admin.describe_groups([group])[group]
    except KafkaError:
        return {}  # no coordinator yet
    finally:
        admin.close()
    if described.get("group_state") != "Stable":
        return {}
    return {
        str(m.get("group_instance_id") or m.get("member_id")): _member_partitions(m, topic)
        for m in described.get("members") or []
    }


def _two_members_share(servers: str, t: Topics) -> bool:
    owned = group_assignment(servers, t.group, t.usage)
    return len(owned) == 2 and all(owned.values())


@pytest.mark.parametrize("module", ENGINES)
def test_two_workers_share_partitions_and_one_killed_hands_over(
    module: str,
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
    first, rest = (
        script.messages[: len(script.messages) // 2],
        script.messages[len(script.messages) // 2 :],
    )
    produce_usage(servers, topics.usage, first)

    def spawn(instance: str) -> subprocess.Popen[bytes]:
        return spawn_engine(
            module, script, servers, pg_url, chain_id, topics, tmp_path,
            instance=instance, max_records=2, session_timeout_ms=SESSION_TIMEOUT_MS,
        )  # fmt: skip

    a, b = spawn("a"), spawn("b")
    try:
        wait_for(lambda: _two_members_share(servers, topics), 60, "both workers assigned")
        owned = group_assignment(servers, topics.group, topics.usage)
        assert owned[f"{topics.group}-a"].isdisjoint(owned[f"{topics.group}-b"])
        assert owned[f"{topics.group}-a"] | owned[f"{topics.group}-b"] == {0, 1, 2}
        wait_for(lambda: sum(decided_count(engine)) > 0, 60, "progress")
        # Killed mid-stream: the rest arrives while its partitions are still its own.
        produce_usage(servers, topics.usage, rest[: len(rest) // 2])
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        produce_usage(servers, topics.usage, rest[len(rest) // 2 :])
        wait_for(
            lambda: (
                group_assignment(servers, topics.group, topics.usage).get(f"{topics.group}-b")
                == {0, 1, 2}
            ),
            60,
            "the survivor owning every partition",
        )
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 60, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (len(script.messages), 0)
        assert b.poll() is None, (tmp_path / "worker-b.log").read_text()[-3000:]
    finally:
        if a.poll() is None:
            a.kill()
            a.wait(timeout=10)
        stop(b, tmp_path / "worker-b.log")
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()


@pytest.mark.parametrize("module", ENGINES)
def test_workers_survive_a_broker_restart_mid_stream(
    module: str,
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    tmp_path: Path,
) -> None:
    # A broker of this test's own: the session broker stays up for the other tests.
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        _broker_restart_scenario(module, st_system, st_chain, pg_url, broker, tmp_path)
    finally:
        broker.stop()


def _broker_restart_scenario(
    module: str,
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    migrate.upgrade(pg_url)
    servers, topics = broker.bootstrap_servers, Topics.unique()
    chain_id = st_system.manifest.chain_id
    script = build(st_system, st_chain)
    st_chain.advance_time(script.last_time - st_chain.now() + 5)
    index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
    engine = create_engine(pg_url, poolclass=NullPool)
    thirds = [script.messages[i::3] for i in range(3)]
    produce_usage(servers, topics.usage, thirds[0])

    def spawn(instance: str) -> subprocess.Popen[bytes]:
        return spawn_engine(
            module, script, servers, pg_url, chain_id, topics, tmp_path,
            instance=instance, max_records=2, session_timeout_ms=SESSION_TIMEOUT_MS,
        )  # fmt: skip

    workers = {"a": spawn("a"), "b": spawn("b")}
    try:
        wait_for(lambda: _two_members_share(servers, topics), 60, "both workers assigned")
        wait_for(lambda: sum(decided_count(engine)) > 0, 60, "progress")
        # Restarted while the second third is being decided, the last one produced after.
        produce_usage(servers, topics.usage, thirds[1])
        broker.restart()
        produce_usage(servers, topics.usage, thirds[2])
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 90, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (len(script.messages), 0)
        for name, process in workers.items():
            log = (tmp_path / f"worker-{name}.log").read_text()
            assert process.poll() is None, f"worker {name} died:\n{log[-3000:]}"
    finally:
        for name, process in workers.items():
            if process.poll() is None:
                stop(process, tmp_path / f"worker-{name}.log")
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()


@pytest.mark.parametrize("module", ENGINES)
def test_a_usage_topic_missing_at_a_rebalance_is_consumed_once_it_is_back(
    module: str,
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    """A group that rebalances while the usage topic is missing from the worker's metadata (the
    topic just created at start, a broker just restarted, the topic re-created) is assigned
    nothing. The worker must see the topic within seconds (its metadata refresh) and rejoin,
    not sit idle until aiokafka's default five-minute refresh while records pile up (the faust
    worker did, at start and in the chaos test after a broker restart)."""
    script, topics, _ = _published_scenario(st_system, st_chain, pg_url, kafka_broker, usage=False)
    servers = kafka_broker.bootstrap_servers
    engine = create_engine(pg_url, poolclass=NullPool)
    worker = spawn_engine(
        module, script, servers, pg_url, st_system.manifest.chain_id, topics, tmp_path,
        instance="a", session_timeout_ms=SESSION_TIMEOUT_MS,
    )  # fmt: skip
    log = tmp_path / "worker-a.log"
    admin = KafkaAdminClient(bootstrap_servers=servers.split(","))
    try:
        wait_for(
            lambda: any(group_assignment(servers, topics.group, topics.usage).values()),
            60,
            "the worker assigned the usage partitions",
        )
        admin.delete_topics([topics.usage])
        wait_for(
            lambda: (
                not any(group_assignment(servers, topics.group, topics.usage).values())
                and topics.usage not in admin.list_topics()
            ),
            60,
            "the group rebalanced without the usage topic",
        )
        admin.create_topics([NewTopic(topics.usage, 3, 1)])
        produce_usage(servers, topics.usage, script.messages)
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 45, f"{want} accruals / dead letters")
        assert worker.poll() is None, f"worker died:\n{log.read_text()[-3000:]}"
    finally:
        admin.close()
        if worker.poll() is None:
            stop(worker, log)
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()
