"""The usage tree (leaf encoding, order independence, the empty epoch) and usage receipts read
from the accruals table (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa
from eth_abi.abi import encode as abi_encode
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from schemas import migrate
from schemas.accrual import Accrual
from schemas.chain import ChainPosition
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.keccak import keccak256
from settlement.merkle import MerkleTree
from settlement.usage_root import (
    EMPTY_USAGE_ROOT,
    USAGE_LEAF_ENCODING,
    UsageReceipt,
    UsageRecord,
    epoch_usage_root,
    read_usage_records,
    usage_receipt,
    usage_root,
    usage_tree,
)
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore

RECORDS = [
    UsageRecord(f"node:{i}", 1 + i % 2, 10 + i % 3, i + 1, 1_700_000_000 + i, (i + 1) * 1_500_000)
    for i in range(7)
]


def test_leaf_is_the_documented_abi_encoding() -> None:
    record = RECORDS[3]
    encoded = abi_encode(
        list(USAGE_LEAF_ENCODING),
        [keccak256(b"node:3"), 2, 10, 4, 1_700_000_003, 6_000_000],
    )
    tree = usage_tree([record])
    assert tree is not None
    assert tree.leaf_hash(0) == "0x" + keccak256(keccak256(encoded)).hex()
    assert tree.root_bytes == keccak256(keccak256(encoded))  # a one-leaf tree's root is its leaf


def test_root_depends_on_the_set_not_the_order() -> None:
    root = usage_root(RECORDS)
    assert usage_root(list(reversed(RECORDS))) == root
    assert root == MerkleTree.of([r.leaf() for r in RECORDS], USAGE_LEAF_ENCODING).root_bytes
    changed = [*RECORDS[:-1], replace(RECORDS[-1], units=99)]
    assert usage_root(changed) != root
    assert usage_root([]) == EMPTY_USAGE_ROOT == bytes(32)


def _accrual(usage_id: str, epoch: int, units: int, t: int) -> Accrual:
    return Accrual(
        usage_id=usage_id,
        epoch=epoch,
        model_id=1,
        license_id=3,
        payer="0x" + "aa" * 20,
        event_time=t,
        units=units,
        price_per_unit_e6=7,
        fee_e6=7 * units,
        state_interval=ChainPosition(block_number=5, log_index=1),
        operator="0x" + "bb" * 20,
        operator_bps=2_000,
        treasury_bps=1_000,
        contributors_bps=7_000,
    )


def test_receipts_prove_billed_usage(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = create_engine(db_url, poolclass=NullPool)
    accruals = metadata.tables["accruals"]
    try:
        with engine.begin() as connection:
            SqlAlchemyAccrualStore(connection).add_accruals(
                [_accrual(f"u:{i}", i % 2, i + 1, 1_000 + i) for i in range(9)]
            )
            connection.execute(
                accruals.update().where(accruals.c.epoch == 0).values(settled_epoch=4)
            )
        with engine.connect() as connection:
            records = list(read_usage_records(connection, 4))
            bulk_root, bulk_count = epoch_usage_root(connection, 4)
            receipt = usage_receipt(connection, "u:2")
            unsettled = usage_receipt(connection, "u:3")
            unknown = usage_receipt(connection, "nope")
            count = connection.execute(
                sa.select(sa.func.count())
                .select_from(accruals)
                .where(accruals.c.settled_epoch == 4)
            ).scalar_one()
        assert len(records) == count == bulk_count == 5
        assert bulk_root == usage_root(records)
        assert epoch_usage_root_empty(engine) == (EMPTY_USAGE_ROOT, 0)
        assert unsettled is None
        assert unknown is None
        assert receipt is not None
        assert receipt.epoch == 4
        assert receipt.record == UsageRecord("u:2", 1, 3, 3, 1_002, 21)
        assert receipt.root == "0x" + usage_root(records).hex()
        assert receipt.verify()
        doc = receipt.to_json()
        assert doc["leaf"][1:] == ["1", "3", "3", "1002", "21"]
        assert doc["proof"] == list(receipt.proof)
        forged = UsageReceipt(
            receipt.usage_id,
            receipt.epoch,
            UsageRecord("u:2", 1, 3, 4, 1_002, 28),
            receipt.proof,
            receipt.root,
        )
        assert not forged.verify()
    finally:
        engine.dispose()


def epoch_usage_root_empty(engine: Engine) -> tuple[bytes, int]:
    with engine.connect() as connection:
        return epoch_usage_root(connection, 12345)
