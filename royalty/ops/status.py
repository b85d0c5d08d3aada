"""`royalty status`: where every component stands, gathered from the database and the services.

The database is the source: the indexer's checkpoint (indexed and finalized block), each stream
partition's checkpoint (offset consumed, events held for the chain), the epochs by status, the
settler's unconfirmed transactions and the dead letters by reason. Live services add lag: the
chain head over JSON-RPC (blocks behind) and the end offsets of the usage topic in Kafka
(messages behind). A service that does not answer is reported as such, never fatal: status is
what an operator runs when something is wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metering.spool import SpoolDepth, inspect_spool
from schemas.tables import metadata

_t = metadata.tables


@dataclass(frozen=True)
class IndexerStatus:
    """The indexer of one chain."""

    chain_id: int
    indexed_block: int | None
    finalized_block: int | None
    finalized_time: int | None
    head_block: int | None = None
    lag_blocks: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class PartitionStatus:
    """One input partition of the stream join (`component` = `<prefix>:<topic>:<partition>`)."""

    component: str
    topic: str | None
    partition: int | None
    offset: int
    held: int
    updated_at: str
    end_offset: int | None = None
    lag: int | None = None


@dataclass(frozen=True)
class EpochSummary:
    """One epoch not yet final, or the newest final ones."""

    id: int
    status: str
    start_time: int
    end_time: int
    total: str | None
    tx_hash: str | None
    claimable_at: int | None


@dataclass
class StatusReport:
    """Everything `royalty status` prints."""

    generated_at: str
    indexers: list[IndexerStatus] = field(default_factory=list)
    stream: list[PartitionStatus] = field(default_factory=list)
    epochs_by_status: dict[str, int] = field(default_factory=dict)
    epochs: list[EpochSummary] = field(default_factory=list)
    pending_settlement_txs: int = 0
    accruals: int = 0
    usage_watermark: int | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)
    spool: SpoolDepth | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No component unreachable and nothing stuck."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-able document (amounts as decimal strings)."""
        doc = asdict(self)
        doc["healthy"] = self.healthy
        return doc


HeadLookup = Callable[[], int]
"""Returns the chain's head block number (raises when the node does not answer)."""

EndOffsets = Callable[[str, list[int]], Mapping[int, int]]
"""Returns the end offset of each partition of a topic (raises when Kafka does not answer)."""


def _split_component(component: str) -> tuple[str | None, int | None]:
    prefix, _, rest = component.partition(":")
    topic, _, partition = rest.rpartition(":")
    if prefix and topic and partition.isdigit():
        return topic, int(partition)
    return None, None


def gather_status(
    connection: Connection,
    *,
    head: Mapping[int, HeadLookup] | None = None,
    end_offsets: EndOffsets | None = None,
    spool_dir: Path | None = None,
    recent_epochs: int = 5,
    now: datetime | None = None,
) -> StatusReport:
    """Read the status from the database, adding chain and Kafka lag where lookups are given.

    `head` maps chain ids to a head lookup; `end_offsets` reads a topic's end offsets.
    """
    report = StatusReport(generated_at=(now or datetime.now(UTC)).isoformat())
    checkpoints = _t["checkpoints"]
    rows = connection.execute(
        sa.select(checkpoints.c.component, checkpoints.c.position, checkpoints.c.updated_at)
    ).all()
    for component, position, updated_at in sorted(rows, key=lambda r: str(r[0])):
        name = str(component)
        if name.startswith("indexer:") and name.count(":") == 1:
            report.indexers.append(_indexer(name, position or {}, head or {}, report))
        elif isinstance(position, dict) and "offset" in position and "held" in position:
            topic, partition = _split_component(name)
            report.stream.append(
                PartitionStatus(
                    component=name,
                    topic=topic,
                    partition=partition,
                    offset=int(position["offset"]),
                    held=len(position.get("held") or ()),
                    updated_at=updated_at.isoformat() if updated_at else "",
                )
            )
    if end_offsets is not None:
        report.stream = _with_lag(report.stream, end_offsets, report)
    _epochs(connection, report, recent_epochs)
    _usage(connection, report)
    if spool_dir is not None:
        report.spool = inspect_spool(spool_dir)
        if report.spool.pending_records:
            report.problems.append(
                f"metering spool holds {report.spool.pending_records} events Kafka has not acked"
            )
    return report


def _indexer(
    name: str, position: dict[str, Any], head: Mapping[int, HeadLookup], report: StatusReport
) -> IndexerStatus:
    chain_id = int(name.split(":", 1)[1])
    finalized = position.get("finalized") or {}
    indexed = position.get("block_number")
    status = IndexerStatus(
        chain_id=chain_id,
        indexed_block=None if indexed is None else int(indexed),
        finalized_block=finalized.get("block_number"),
        finalized_time=finalized.get("timestamp"),
    )
    lookup = head.get(chain_id)
    if lookup is None:
        return status
    try:
        head_block = int(lookup())
    except Exception as exc:  # any failure of the node is reported, not raised
        report.problems.append(f"chain {chain_id}: node unreachable ({exc})")
        return IndexerStatus(**{**asdict(status), "error": f"node unreachable: {exc}"})
    lag = head_block - (status.indexed_block or 0)
    return IndexerStatus(**{**asdict(status), "head_block": head_block, "lag_blocks": lag})


def _with_lag(
    partitions: list[PartitionStatus], end_offsets: EndOffsets, report: StatusReport
) -> list[PartitionStatus]:
    by_topic: dict[str, list[int]] = {}
    for p in partitions:
        if p.topic is not None and p.partition is not None:
            by_topic.setdefault(p.topic, []).append(p.partition)
    ends: dict[tuple[str, int], int] = {}
    for topic, numbers in by_topic.items():
        try:
            for number, end in end_offsets(topic, sorted(numbers)).items():
                ends[(topic, number)] = int(end)
        except Exception as exc:  # reported, not raised
            report.problems.append(f"kafka: end offsets of {topic} unavailable ({exc})")
    out = []
    for p in partitions:
        key = (p.topic or "", p.partition if p.partition is not None else -1)
        if key not in ends:
            out.append(p)
            continue
        end = ends[key]
        out.append(PartitionStatus(**{**asdict(p), "end_offset": end, "lag": end - p.offset - 1}))
    return out


def _epochs(connection: Connection, report: StatusReport, recent: int) -> None:
    epochs = _t["epochs"]
    counts = connection.execute(
        sa.select(epochs.c.status, sa.func.count()).group_by(epochs.c.status)
    ).all()
    report.epochs_by_status = {str(s): int(n) for s, n in counts}
    unfinished = sa.select(epochs).where(epochs.c.status.notin_(("claimable", "disputed")))
    final = (
        sa.select(epochs)
        .where(epochs.c.status.in_(("claimable", "disputed")))
        .order_by(epochs.c.id.desc())
        .limit(recent)
    )
    rows = [*connection.execute(unfinished), *connection.execute(final)]
    for row in sorted(rows, key=lambda r: int(r.id)):
        report.epochs.append(
            EpochSummary(
                id=int(row.id),
                status=str(row.status),
                start_time=int(row.start_time),
                end_time=int(row.end_time),
                total=None if row.total is None else str(int(row.total)),
                tx_hash=row.tx_hash,
                claimable_at=row.claimable_at,
            )
        )
    txs = _t["settlement_txs"]
    report.pending_settlement_txs = int(
        connection.execute(
            sa.select(sa.func.count()).select_from(txs).where(txs.c.state.in_(("signed", "sent")))
        ).scalar_one()
    )
    if report.pending_settlement_txs:
        report.problems.append(
            f"{report.pending_settlement_txs} settlement transaction(s) not yet mined"
        )


def _usage(connection: Connection, report: StatusReport) -> None:
    accruals = _t["accruals"]
    report.accruals = int(
        connection.execute(sa.select(sa.func.count()).select_from(accruals)).scalar_one()
    )
    usage = _t["usage_events"]
    watermark = connection.execute(sa.select(sa.func.max(usage.c.event_time))).scalar_one()
    report.usage_watermark = None if watermark is None else int(watermark)
    letters = _t["dead_letters"]
    report.dead_letters = {
        str(reason): int(n)
        for reason, n in connection.execute(
            sa.select(letters.c.reason, sa.func.count()).group_by(letters.c.reason)
        )
    }


def rpc_head(rpc_url: str, timeout_s: float = 3.0) -> HeadLookup:
    """A head lookup over JSON-RPC (`eth_blockNumber`)."""

    def lookup() -> int:
        import httpx

        response = httpx.post(
            rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            timeout=timeout_s,
        )
        response.raise_for_status()
        return int(response.json()["result"], 16)

    return lookup


def kafka_end_offsets(bootstrap_servers: str, timeout_ms: int = 3000) -> EndOffsets:
    """An end-offset lookup through a short-lived kafka-python consumer."""

    def lookup(topic: str, partitions: list[int]) -> Mapping[int, int]:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            request_timeout_ms=timeout_ms + 1000,
            client_id="royalty-status",
        )
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = consumer.end_offsets(tps)
            return {tp.partition: int(offset) for tp, offset in ends.items()}
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    return lookup
