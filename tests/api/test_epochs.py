"""Epoch endpoints over SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from settlement.merkle import MerkleTree
from tests.api.conftest import settings
from tests.api.support import account, seed_claim, seed_epoch


def test_epoch_views(engine: Engine, client: TestClient) -> None:
    big = 2**200 + 7  # beyond 64 bits and far beyond a float's precision
    with engine.begin() as conn:
        first = seed_epoch(conn, 1, [(account(1), big), (account(2), 3)])
        seed_epoch(conn, 2, [(account(3), 5)], status="computed")
        seed_claim(conn, 1, first.leaf_of(account(1))[0], account(1), big)
    listed = client.get("/v1/epochs").json()
    assert [e["id"] for e in listed["items"]] == [1, 2]
    assert listed["next_cursor"] is None
    one = client.get("/v1/epochs/1").json()
    assert one["root"] == first.root
    assert one["status"] == "claimable"
    assert one["totals"] == {
        "total": str(big + 3),
        "fees_e6": str((big + 3) * 10**6),
        "leaf_count": 2,
        "accrual_count": 6,
        "claimed": str(big),
    }
    assert one["dispute_deadline"] == 1_000
    assert one["tx_hash"].startswith("0x")
    assert one["usage_root"] == "0x" + "22" * 32
    assert one["inputs_hash"] == "0x" + "11" * 32
    computed = client.get("/v1/epochs", params={"status": "computed"}).json()
    assert [e["id"] for e in computed["items"]] == [2]
    assert computed["items"][0]["tx_hash"] is None


def test_allocations_paginate_and_tree_dump_loads(engine: Engine, client: TestClient) -> None:
    with engine.begin() as conn:
        seeded = seed_epoch(conn, 7, [(account(i), i * 10) for i in range(1, 13)])
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 5}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/v1/epochs/7/allocations", params=params).json()
        seen += [(a["index"], a["account"], int(a["amount"])) for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert tuple(seen) == seeded.leaves
    dump = client.get("/v1/epochs/7/tree").json()
    assert dump["format"] == "standard-v1"
    assert MerkleTree.load(dump).root == seeded.root


def test_missing_epoch_and_bad_input(client: TestClient) -> None:
    for path in ("/v1/epochs/9", "/v1/epochs/9/allocations", "/v1/epochs/9/tree"):
        response = client.get(path)
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"code", "message", "details"}
    assert client.get("/v1/epochs", params={"cursor": "not-ours"}).status_code == 400
    assert client.get("/v1/epochs", params={"limit": 51}).status_code == 400
    assert client.get("/v1/epochs", params={"status": "nope"}).status_code == 422
    assert client.get("/v1/epochs/-1").status_code == 422
    assert client.get("/v1/nowhere").json()["error"]["code"] == "not_found"


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "detail": None}
    assert client.get("/readyz").json()["status"] == "ok"
    client.get("/v1/epochs/1")
    metrics = client.get("/metrics").text
    assert (
        'royalty_api_requests_total{method="GET",route="/v1/epochs/{epoch_id}",status="404"} 1.0'
        in metrics
    )
    assert "royalty_api_request_seconds_bucket" in metrics
    assert client.get("/openapi.json").json()["info"]["title"] == "Royalty engine API"
    assert client.get("/docs").status_code == 200


def test_readyz_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path}/empty.db", api=settings())
    response = TestClient(app).get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
