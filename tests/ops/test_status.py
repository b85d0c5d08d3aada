"""`royalty status` against a real database, a real chain node, a real Kafka and a real spool."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from typer.testing import CliRunner

from deploy.local.anvil import Anvil
from deploy.local.kafka import KafkaBroker
from metering.spool import FileSpool, inspect_spool
from royalty.cli import app
from royalty.ops.status import gather_status, kafka_end_offsets, rpc_head
from schemas import migrate
from schemas.engine import create_engine
from schemas.tables import metadata

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
_t = metadata.tables


def _populate(url: str, topic: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(
                _t["checkpoints"].insert(),
                [
                    {
                        "component": "indexer:31337",
                        "position": {
                            "block_number": 40,
                            "block_hash": "0x" + "ab" * 32,
                            "finalized": {
                                "chain_id": 31337,
                                "block_number": 38,
                                "block_hash": "0x" + "cd" * 32,
                                "timestamp": 1_700_000_000,
                            },
                        },
                        "updated_at": NOW,
                    },
                    {
                        "component": f"stream.worker:{topic}:0",
                        "position": {"offset": 2, "held": [[3, "{}"]]},
                        "updated_at": NOW,
                    },
                    {
                        "component": "indexer:31337:lease",
                        "position": {"holder": "x"},
                        "updated_at": NOW,
                    },
                ],
            )
            c.execute(
                _t["epochs"].insert(),
                [
                    {"id": 0, "start_time": 0, "end_time": 60, "status": "claimable", "total": 7},
                    {"id": 1, "start_time": 60, "end_time": 120, "status": "committed", "total": 3},
                    {"id": 2, "start_time": 120, "end_time": 180, "status": "open", "total": None},
                ],
            )
            c.execute(
                _t["dead_letters"].insert(),
                [
                    {
                        "reason": reason,
                        "detail": "d",
                        "payload": "p",
                        "payload_truncated": False,
                        "received_at": NOW,
                    }
                    for reason in ("expired", "expired", "malformed")
                ],
            )
    finally:
        engine.dispose()


def _produce(servers: str, topic: str, count: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=servers.split(","))
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=servers.split(","), acks="all")
    try:
        for i in range(count):
            producer.send(topic, value=str(i).encode(), partition=0)
        producer.flush(timeout=30)
    finally:
        producer.close()


def test_status_reads_every_component(
    db_url: str, anvil_chain: Anvil, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    migrate.upgrade(db_url)
    topic = f"usage-status-{os.urandom(4).hex()}"
    _populate(db_url, topic)
    _produce(kafka_broker.bootstrap_servers, topic, 5)
    spool_dir = tmp_path / "spool"
    spool = FileSpool(spool_dir, max_bytes=1 << 20, segment_bytes=1 << 16)
    try:
        spool.append([(b"k", b"one"), (b"k", b"two")])
        engine = create_engine(db_url)
        try:
            with engine.connect() as connection:
                report = gather_status(
                    connection,
                    head={31337: rpc_head(anvil_chain.rpc_url)},
                    end_offsets=kafka_end_offsets(kafka_broker.bootstrap_servers),
                    spool_dir=spool_dir,
                    now=NOW,
                )
        finally:
            engine.dispose()
    finally:
        spool.close()
    (indexer,) = report.indexers
    assert (indexer.indexed_block, indexer.finalized_block) == (40, 38)
    assert indexer.head_block is not None
    assert indexer.lag_blocks == indexer.head_block - 40
    (partition,) = report.stream
    assert (partition.topic, partition.partition, partition.offset) == (topic, 0, 2)
    assert (partition.held, partition.end_offset, partition.lag) == (1, 5, 2), report.problems
    assert report.epochs_by_status == {"claimable": 1, "committed": 1, "open": 1}
    assert [e.id for e in report.epochs] == [0, 1, 2]
    assert report.epochs[0].total == "7"
    assert report.dead_letters == {"expired": 2, "malformed": 1}
    assert report.spool is not None
    assert report.spool.pending_records == 2
    assert any("spool" in p for p in report.problems)
    assert not report.healthy
    json.dumps(report.to_json(), default=str)


def test_unreachable_services_are_problems_not_crashes(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    _populate(sqlite_url, "usage-x")

    def broken(_topic: str, _partitions: list[int]) -> dict[int, int]:
        raise ConnectionError("no broker")

    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            report = gather_status(
                connection,
                head={31337: rpc_head("http://127.0.0.1:9/", timeout_s=0.5)},
                end_offsets=broken,
            )
    finally:
        engine.dispose()
    assert report.indexers[0].error is not None
    assert report.stream[0].lag is None
    assert len(report.problems) == 2


def test_spool_inspection_skips_acked_and_torn(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    try:
        spool.append([(b"k", b"a"), (b"k", b"b"), (b"k", b"c")])
        first = spool.read(spool.cursor, 1)
        spool.ack(first[-1].end, 1)
        assert inspect_spool(tmp_path).pending_records == 2
    finally:
        spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    with segment.open("ab") as fh:
        fh.write(b"\x00\x01torn")
    assert inspect_spool(tmp_path).pending_records == 2
    assert inspect_spool(tmp_path / "missing").pending_records == 0


def test_status_command(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    migrate.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    with engine.begin() as c:
        c.execute(_t["epochs"].insert().values(id=0, start_time=0, end_time=60, status="open"))
    engine.dispose()
    monkeypatch.setenv("ROYALTY_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(app, ["status", "--db-url", sqlite_url, "--no-live", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["healthy"] is True
    assert doc["epochs_by_status"] == {"open": 1}
    table = runner.invoke(app, ["status", "--db-url", sqlite_url, "--no-live"])
    assert table.exit_code == 0
    assert "healthy" in table.output
    with sa.create_engine(sqlite_url).begin() as c:
        c.execute(
            _t["settlement_txs"]
            .insert()
            .values(
                tx_hash="0x" + "11" * 32,
                epoch_id=0,
                kind="commit",
                chain_id=31337,
                sender="0x" + "22" * 20,
                nonce=0,
                raw_tx="0x",
                state="sent",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    stuck = runner.invoke(app, ["status", "--db-url", sqlite_url, "--no-live"])
    assert stuck.exit_code == 1
    assert "not yet mined" in stuck.output
