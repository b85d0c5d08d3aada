"""Raw usage, accruals and rejects in ClickHouse for analysts (chDB by default, a server by URL).

Every table is a `ReplacingMergeTree` ordered by its id, so a redelivered batch collapses into
the rows already there (read with `FINAL` for exact counts). Money stays exact: `UInt256`
columns, integers in, integers out. The schema is documented in `docs/analytics.md`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from schemas.accrual import ACCRUAL_ROW_COLUMNS, Accrual, DeadLetter, accrual_row
from schemas.usage import UsageEvent, encode_usage_event

TABLES: dict[str, str] = {
    "usage_raw": """
        usage_id String, source String, event_time DateTime('UTC'), model_id UInt256,
        license_id UInt256, units UInt64, keyid Nullable(String), payload String
    """,
    "accruals": """
        usage_id String, epoch UInt64, model_id UInt256, license_id UInt256, payer String,
        event_time DateTime('UTC'), units UInt64, price_per_unit_e6 UInt256, fee_e6 UInt256,
        state_block_number UInt64, state_log_index UInt64, operator String,
        operator_bps UInt16, treasury_bps UInt16, contributors_bps UInt16
    """,
    "rejects": """
        reject_id String, reason LowCardinality(String), detail String, usage_id Nullable(String),
        source Nullable(String), received_at DateTime64(6, 'UTC'), payload String
    """,
    "epochs": """
        epoch UInt64, status LowCardinality(String), status_rank UInt8, start_time DateTime('UTC'),
        end_time DateTime('UTC'), root Nullable(String), usage_root Nullable(String),
        inputs_hash Nullable(String), total Nullable(UInt256), fees_e6 Nullable(UInt256),
        leaf_count Nullable(UInt64), accrual_count Nullable(UInt64), tx_hash Nullable(String),
        block_number Nullable(UInt64), claimable_at Nullable(UInt64)
    """,
    "payouts": """
        epoch UInt64, leaf_index UInt64, account String, amount UInt256
    """,
}
_ORDER = {
    "usage_raw": "usage_id",
    "accruals": "usage_id",
    "rejects": "reject_id",
    "epochs": "epoch",
    "payouts": "(epoch, leaf_index)",
}
_VERSION = {"epochs": "status_rank"}
"""Tables whose newest row wins by a version column (an epoch moves forward in its lifecycle)."""

#: Lifecycle order of epoch statuses: the higher rank replaces the lower.
STATUS_RANK = {
    "open": 0,
    "closing": 1,
    "computed": 2,
    "committed": 3,
    "claimable": 4,
    "disputed": 4,
}


_EPOCH_INTS = ("total", "fees_e6", "leaf_count", "accrual_count")


class ClickHouseClient(Protocol):
    """The part of a clickhouse-connect client the sink uses."""

    def command(self, cmd: str) -> Any: ...

    def insert(
        self, table: str, data: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> Any: ...


def reject_id(letter: DeadLetter) -> str:
    """A dead letter's id: the same rejection re-sent by a retried sink gets the same id."""
    key = f"{letter.reason}|{letter.received_at.isoformat()}|{letter.usage_id}|{letter.payload}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ClickHouseSink:
    """Writes the join's outputs into `database` (tables created by `ensure_schema`)."""

    def __init__(self, client: ClickHouseClient, database: str) -> None:
        if not database.isidentifier():
            raise ValueError(f"not a ClickHouse database name: {database!r}")
        self.client = client
        self.database = database

    def ensure_schema(self) -> None:
        """Create the database and tables when missing (idempotent)."""
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        for name, columns in TABLES.items():
            self.client.command(
                f"CREATE TABLE IF NOT EXISTS {self.database}.{name} ({columns}) "
                f"ENGINE = ReplacingMergeTree({_VERSION.get(name, '')}) ORDER BY {_ORDER[name]}"
            )

    def write(
        self,
        usage: Sequence[UsageEvent],
        accruals: Sequence[Accrual],
        letters: Sequence[DeadLetter],
    ) -> None:
        """Insert one batch's outputs; re-sending the same batch is harmless."""
        if usage:
            self._insert(
                "usage_raw",
                [
                    [
                        e.id,
                        e.source,
                        e.unix_time,
                        e.data.model_id,
                        e.data.license_id,
                        e.data.units,
                        e.keyid,
                        encode_usage_event(e).decode("utf-8"),
                    ]
                    for e in usage
                ],
                [
                    "usage_id",
                    "source",
                    "event_time",
                    "model_id",
                    "license_id",
                    "units",
                    "keyid",
                    "payload",
                ],
            )
        if accruals:
            self._insert(
                "accruals",
                [list(accrual_row(a)) for a in accruals],
                list(ACCRUAL_ROW_COLUMNS),
            )
        if letters:
            self._insert(
                "rejects",
                [
                    [
                        reject_id(d),
                        d.reason.value,
                        d.detail,
                        d.usage_id,
                        d.source,
                        d.received_at,
                        d.payload,
                    ]
                    for d in letters
                ],
                ["reject_id", "reason", "detail", "usage_id", "source", "received_at", "payload"],
            )

    def write_settlement(
        self, epochs: Sequence[Mapping[str, Any]], payouts: Sequence[Sequence[Any]]
    ) -> None:
        """Insert epoch rows (as the `epochs` table holds them) and payouts
        `(epoch, leaf_index, account, amount)`; re-sending is harmless."""
        if epochs:
            columns = [
                "epoch", "status", "status_rank", "start_time", "end_time", "root",
                "usage_root", "inputs_hash", "total", "fees_e6", "leaf_count",
                "accrual_count", "tx_hash", "block_number", "claimable_at",
            ]  # fmt: skip
            rows = [
                [
                    int(e["id"]),
                    e["status"],
                    STATUS_RANK[e["status"]],
                    int(e["start_time"]),
                    int(e["end_time"]),
                    *(e.get(c) for c in ("root", "usage_root", "inputs_hash")),
                    *(None if e.get(c) is None else int(e[c]) for c in _EPOCH_INTS),
                    e.get("tx_hash"),
                    *(None if e.get(c) is None else int(e[c]) for c in ("block_number",)),
                    None if e.get("claimable_at") is None else int(e["claimable_at"]),
                ]
                for e in epochs
            ]
            self._insert("epochs", rows, columns)
        if payouts:
            self._insert(
                "payouts", [list(p) for p in payouts], ["epoch", "leaf_index", "account", "amount"]
            )

    def _insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        self.client.insert(f"{self.database}.{table}", rows, column_names=columns)
