"""`indexer.bulk.bulk_insert` stores exactly what an INSERT would: `COPY` on PostgreSQL (text
that needs escaping, uint256 beyond 64 bits, JSON lists and pre-serialised JSON, NULLs,
booleans) and `executemany` on SQLite, inside the caller's transaction."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from indexer.bulk import JsonText, bulk_insert
from schemas.engine import create_engine
from schemas.tables import metadata

AWKWARD = "tab\there\nnewline \\ backslash \\N not null \r é ✓"
HASH, ADDRESS = "0x" + "ab" * 32, "0x" + "Cd" * 20

_models = metadata.tables["chain_models"]
_raw_logs = metadata.tables["chain_raw_logs"]


def _model_rows() -> list[dict[str, Any]]:
    return [
        {
            "chain_id": 1,
            "block_number": 7,
            "log_index": i,
            "block_hash": HASH,
            "block_timestamp": 1_700_000_000,
            "model_id": 2**256 - 1 - i,
            "operator": ADDRESS,
            "metadata_uri": AWKWARD,
        }
        for i in range(3)
    ]


def _raw_row() -> dict[str, Any]:
    return {
        "chain_id": 1,
        "block_number": 7,
        "log_index": 9,
        "block_hash": HASH,
        "block_timestamp": 1_700_000_000,
        "tx_hash": HASH,
        "contract": ADDRESS,
        "topics": ["0x01", AWKWARD],
        "data": "0x",
        "reason": "unknown_topic",
        "detail": AWKWARD,
    }


def test_rows_round_trip(migrated_url: str) -> None:
    engine = create_engine(migrated_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            bulk_insert(connection, _models, _model_rows())
            bulk_insert(connection, _raw_logs, [_raw_row()])
            bulk_insert(connection, _raw_logs, [])
        with engine.connect() as connection:
            models = connection.execute(sa.select(_models).order_by(_models.c.log_index)).all()
            raw = connection.execute(sa.select(_raw_logs)).one()
        assert [dict(r._mapping) for r in models] == _model_rows()
        assert dict(raw._mapping) == _raw_row()
    finally:
        engine.dispose()


def test_rows_roll_back_with_the_transaction(migrated_url: str) -> None:
    engine = create_engine(migrated_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            bulk_insert(connection, _models, _model_rows())
            transaction.rollback()  # the unit of work failed after the insert
        with engine.connect() as connection:
            assert connection.execute(sa.select(sa.func.count()).select_from(_models)).scalar() == 0
    finally:
        engine.dispose()


def test_json_text_nulls_and_booleans_store_as_an_insert_would(migrated_url: str) -> None:
    transitions, events = (
        metadata.tables["chain_proposal_transitions"],
        metadata.tables["chain_events"],
    )
    position = {"chain_id": 1, "block_hash": HASH, "block_timestamp": 5}
    transition_rows = [
        {
            **position,
            "block_number": 1,
            "log_index": 0,
            "proposal_id": 2**255,
            "status": "queued",
            "eta_seconds": 10,
        },
        {
            **position,
            "block_number": 1,
            "log_index": 1,
            "proposal_id": 7,
            "status": "executed",
            "eta_seconds": None,
        },
    ]
    document = {"kind": "Staked", "amount": "5", "note": AWKWARD, "params": None}
    event_rows = [
        {
            "event_id": f"1:{HASH}:{i}",
            "chain_id": 1,
            "block_number": 1,
            "block_hash": HASH,
            "block_timestamp": 5,
            "tx_hash": HASH,
            "log_index": i,
            "contract": ADDRESS,
            "kind": "Staked",
            "payload": payload,
            "removed": i == 1,
        }
        for i, payload in enumerate([JsonText(json.dumps(document)), document])
    ]
    engine = create_engine(migrated_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            bulk_insert(connection, transitions, transition_rows)
            bulk_insert(connection, events, event_rows)
        with engine.connect() as connection:
            stored = connection.execute(sa.select(transitions).order_by(transitions.c.log_index))
            assert [dict(r._mapping) for r in stored] == transition_rows
            rows = connection.execute(sa.select(events).order_by(events.c.log_index)).all()
        assert [r.payload for r in rows] == [document, document]
        assert [r.removed for r in rows] == [False, True]
    finally:
        engine.dispose()


@pytest.mark.parametrize("amount", [-1, 2**256])
def test_out_of_range_uint256_is_refused(migrated_url: str, amount: int) -> None:
    rows = _model_rows()
    rows[1]["model_id"] = amount
    engine = create_engine(migrated_url, poolclass=NullPool)
    try:
        with pytest.raises((ValueError, sa.exc.StatementError)), engine.begin() as connection:
            bulk_insert(connection, _models, rows)
    finally:
        engine.dispose()
