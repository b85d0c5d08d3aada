"""chDB smoke: clickhouse-connect's in-process backend, insert and aggregate."""

from __future__ import annotations

import clickhouse_connect


def test_insert_and_aggregate(analytics_database: tuple[str, str]) -> None:
    url, db = analytics_database
    client = clickhouse_connect.get_client(dsn=url)
    client.command(
        f"CREATE TABLE {db}.usage (usage_id String, model_id UInt256, fee_e6 UInt256, "
        "time DateTime('UTC')) ENGINE = ReplacingMergeTree ORDER BY usage_id"
    )
    big = 2**200 + 7  # beyond 64 bits: must stay exact
    rows = [
        ["u1", 1, big, 1_700_000_000],
        ["u2", 1, 5, 1_700_000_060],
        ["u3", 2, 11, 1_700_000_120],
    ]
    client.insert(f"{db}.usage", rows, column_names=["usage_id", "model_id", "fee_e6", "time"])
    # A redelivered row is collapsed by ReplacingMergeTree (FINAL reads the merged view).
    client.insert(f"{db}.usage", [rows[0]], column_names=["usage_id", "model_id", "fee_e6", "time"])
    result = client.query(
        f"SELECT model_id, sum(fee_e6), count() FROM {db}.usage FINAL "
        "GROUP BY model_id ORDER BY model_id"
    ).result_rows
    assert result == [(1, big + 5, 2), (2, 11, 1)]
