"""Proof lookups served from memory (the proof view) answer as the database would."""

from __future__ import annotations

import time

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.routes.contributors import ProofView
from tests.api.conftest import AppFactory, settings
from tests.api.support import CHAIN_ID, T, account, seed_claim, seed_dispute, seed_epoch

ALICE, BOB, CAROL = account(0xA11CE), account(0xB0B), account(0xCA801)
DISTRIBUTOR = account(0xD15)


def _seed(engine: Engine) -> None:
    with engine.begin() as conn:
        seed_epoch(conn, 1, [(ALICE, 600), (BOB, 400)], status="claimable")
        seed_epoch(conn, 2, [(ALICE, 50), (CAROL, 7)], status="claimable")
        seed_epoch(conn, 3, [(ALICE, 11), (BOB, 13)], status="committed", claimable_at=10**12)
        seed_epoch(conn, 4, [(ALICE, 1_000), (BOB, 1)], status="claimable")
        seed_dispute(conn, 4, CAROL, 1_001)
        seed_claim(conn, 1, 0 if ALICE.lower() < BOB.lower() else 1, ALICE, 600)


def _bob_index(epoch: int) -> int:
    first = {1: ALICE, 4: ALICE}[epoch]
    return 1 if first.lower() < BOB.lower() else 0


def test_memory_answers_equal_database_answers(engine: Engine, make_client: AppFactory) -> None:
    _seed(engine)
    fresh = make_client()  # epoch_cache_s = 0: every lookup reads the database
    cached = make_client(api=settings(epoch_cache_s=60))
    queries = ["", "?epoch=1", "?epoch=2", "?epoch=3", "?epoch=4", "?epoch=99", "?epoch=01"]
    queries += ["?epoch=-1", "?epoch=x", f"?epoch={2**63}", "?epoch=1&other=2", "?other=2"]
    addresses = [ALICE, ALICE.lower(), BOB, CAROL.upper().replace("0X", "0x"), account(5)]
    for address in addresses:
        for query in queries:
            path = f"/v1/contributors/{address}/proofs{query}"
            want, got = fresh.get(path), cached.get(path)
            assert got.status_code == want.status_code, path
            assert got.headers["content-type"] == want.headers["content-type"], path
            assert got.json() == want.json(), path
    body = cached.get(f"/v1/contributors/{ALICE}/proofs").json()
    assert [(i["epoch"], i["claimed"]) for i in body["items"]] == [(1, True), (2, False)]


def test_view_body_is_the_route_json(engine: Engine, make_client: AppFactory) -> None:
    _seed(engine)
    fresh = make_client()
    cached = make_client(api=settings(epoch_cache_s=60))
    cached.get(f"/v1/contributors/{BOB}/proofs")
    view = cached.app.state.context.cache["proof_views"]._view  # type: ignore[attr-defined]
    assert isinstance(view, ProofView)
    assert [e for e, _, _ in view.epochs] == [1, 2]
    body = view.body(BOB)
    assert body is not None
    assert body == fresh.get(f"/v1/contributors/{BOB}/proofs").content
    assert view.body(BOB, 2) is None


def test_claimed_flag_follows_the_indexer_within_the_cache_time(
    engine: Engine, make_client: AppFactory
) -> None:
    _seed(engine)
    client = make_client(
        api=settings(epoch_cache_s=0.2), chain_id=CHAIN_ID, distributor=DISTRIBUTOR
    )
    before = client.get(f"/v1/contributors/{BOB}/proofs").json()["items"]
    assert [(i["epoch"], i["claimed"]) for i in before] == [(1, False)]
    assert client.get(f"/v1/contributors/{BOB}/claim-all").status_code == 200
    with engine.begin() as conn:
        seed_claim(conn, 1, _bob_index(1), BOB, 400)
    # Claim-all reads claims fresh: an indexed claim is never offered again.
    nothing = client.get(f"/v1/contributors/{BOB}/claim-all")
    assert nothing.status_code == 404
    assert nothing.json()["error"]["code"] == "nothing_to_claim"
    time.sleep(0.25)
    after = client.get(f"/v1/contributors/{BOB}/proofs").json()["items"]
    assert [(i["epoch"], i["claimed"]) for i in after] == [(1, True)]


def test_epoch_status_changes_show_within_the_cache_time(
    engine: Engine, make_client: AppFactory
) -> None:
    _seed(engine)
    client = make_client(api=settings(epoch_cache_s=0.2))
    assert len(client.get(f"/v1/contributors/{BOB}/proofs").json()["items"]) == 1
    with engine.begin() as conn:
        conn.execute(sa.update(T["epochs"]).where(T["epochs"].c.id == 3).values(status="claimable"))
    time.sleep(0.25)
    items = client.get(f"/v1/contributors/{BOB}/proofs").json()["items"]
    assert [i["epoch"] for i in items] == [1, 3]


def test_lookups_from_memory_are_counted_under_the_route(
    engine: Engine, make_client: AppFactory
) -> None:
    _seed(engine)
    client = make_client(api=settings(epoch_cache_s=60))
    assert client.get(f"/v1/contributors/{ALICE}/proofs").status_code == 200
    assert client.get(f"/v1/contributors/{ALICE}/proofs?epoch=3").status_code == 404
    metrics = client.get("/metrics").text
    route = 'route="/v1/contributors/{address}/proofs"'
    assert f'royalty_api_requests_total{{method="GET",{route},status="200"}} 1.0' in metrics
    assert f'royalty_api_requests_total{{method="GET",{route},status="404"}} 1.0' in metrics


def test_inconsistent_allocations_are_a_500_not_a_proof(
    engine: Engine, make_client: AppFactory
) -> None:
    _seed(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.update(T["epoch_allocations"])
            .where(T["epoch_allocations"].c.epoch_id == 2)
            .values(amount=1)
        )
    client: TestClient = make_client(api=settings(epoch_cache_s=60))
    response = client.get(f"/v1/contributors/{ALICE}/proofs")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


def test_rate_limit_applies_to_lookups_from_memory(engine: Engine, make_client: AppFactory) -> None:
    _seed(engine)
    client = make_client(api=settings(epoch_cache_s=60, rate_limit_per_s=0.001, rate_limit_burst=2))
    statuses = [client.get(f"/v1/contributors/{ALICE}/proofs").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
