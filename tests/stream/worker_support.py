"""Helpers of the stream worker tests: unique topics, the chain indexed into the `chain` topic,
usage produced into `usage`, the worker in a thread or a subprocess, polling the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from sqlalchemy.engine import Engine

from indexer.publisher import KafkaChainConfig, KafkaChainPublisher
from metering.keyfiles import write_json_atomic
from metering.signing import KeyRing
from schemas.tables import metadata
from settlement.chain import System
from stream.app import KafkaJoinWorker, WorkerConfig
from stream.epochs import EpochClock
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import index_to_head, make_follower
from tests.stream.scenario import EPOCH_S, Script

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Topics:
    """Topic and group names unique to one test."""

    usage: str
    chain: str
    accruals: str
    dead_letter: str
    group: str
    component: str

    @classmethod
    def unique(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(
            f"usage-{tag}",
            f"chain-{tag}",
            f"accruals-{tag}",
            f"dead-{tag}",
            f"worker-{tag}",
            f"stream.worker.{tag}",
        )


def index_into_topic(
    system: System, chain: ChainHarness, url: str, servers: str, topic: str
) -> None:
    """Index the chain to its head (confirmations 0), publishing to the `chain` topic."""
    publisher = KafkaChainPublisher(KafkaChainConfig(servers, topic=topic, partitions=3))
    follower = make_follower(
        system, [chain.anvil.rpc_url], url, confirmations=0, publisher=publisher
    )
    try:
        index_to_head(follower)
    finally:
        follower.release_lease()
        follower.engine.dispose()
        publisher.close()


def _model_key(message: bytes) -> bytes:
    # The usage topic is keyed by model id; a malformed message has none to give.
    try:
        return str(json.loads(message)["data"]["model_id"]).encode("ascii")
    except (ValueError, KeyError, TypeError):
        return b"malformed"


def topic_records(servers: str, topic: str) -> tuple[int, list[tuple[int, bytes, bytes]]]:
    """Everything on `topic` now: its partition count, and every record as (partition, key,
    value), each partition's in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=servers.split(","), consumer_timeout_ms=1000)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        return len(partitions), [(m.partition, m.key, m.value) for m in consumer]
    finally:
        consumer.close()


def produce_usage(servers: str, topic: str, messages: list[bytes]) -> None:
    """Produce `messages` in order, keyed by model id, and wait for every ack."""
    admin = KafkaAdminClient(bootstrap_servers=servers.split(","))
    try:
        if topic not in set(admin.list_topics()):
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=servers.split(","), acks="all")
    try:
        for message in messages:
            producer.send(topic, key=_model_key(message), value=message)
        producer.flush(timeout=30)
    finally:
        producer.close()


def worker_config(script: Script, servers: str, url: str, chain_id: int, t: Topics) -> WorkerConfig:
    return WorkerConfig(
        bootstrap_servers=servers,
        db_url=url,
        chain_id=chain_id,
        key_ring=script.key_ring,
        clock=EpochClock(EPOCH_S, script.genesis),
        usage_topic=t.usage,
        chain_topic=t.chain,
        accruals_topic=t.accruals,
        dead_letter_topic=t.dead_letter,
        group_id=t.group,
        component=t.component,
        max_records=5,
        poll_ms=50,
    )


def keyless_worker_config(servers: str, url: str, t: Topics, **overrides: Any) -> WorkerConfig:
    """A worker configuration for the topics of `t` with no keys (every event is rejected):
    for tests of the worker's plumbing rather than of the join."""
    settings: dict[str, Any] = {
        "bootstrap_servers": servers, "db_url": url, "chain_id": 31337, "key_ring": KeyRing(),
        "clock": EpochClock(60, 0), "usage_topic": t.usage, "chain_topic": t.chain,
        "accruals_topic": t.accruals, "dead_letter_topic": t.dead_letter, "group_id": t.group,
        "component": t.component,
    }  # fmt: skip
    return WorkerConfig(**(settings | overrides))


class ThreadWorker:
    """A worker in a thread (the in-process tests); `stop()` re-raises what it died of."""

    def __init__(self, config: WorkerConfig) -> None:
        self.worker = KafkaJoinWorker(config)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.worker.start()
            self.worker.run(self._stop)
        except BaseException as exc:  # reported by stop()
            self._error = exc
        finally:
            self.worker.close()

    def start(self) -> ThreadWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._error is not None:
            raise self._error


ENGINES = ["stream.app", "stream.faust_app"]
"""The worker engines' modules: kafka-python and faust."""


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


def decided_count(engine: Engine) -> tuple[int, int]:
    """(accrual rows, dead-letter rows) committed now."""
    with engine.connect() as connection:
        accruals = connection.execute(
            sa.select(sa.func.count()).select_from(metadata.tables["accruals"])
        ).scalar_one()
        letters = connection.execute(
            sa.select(sa.func.count()).select_from(metadata.tables["dead_letters"])
        ).scalar_one()
    return int(accruals), int(letters)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until true; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def expected_totals(script: Script) -> tuple[int, int]:
    """(accruals, dead letters) the scenario must end with."""
    billed = sum(1 for e in script.expected.values() if e.reason is None)
    return billed, sum(script.reject_counts.values())
