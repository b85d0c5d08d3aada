"""Royalties, proofs and claim-all of a contributor, over SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.proofs import LEAF_ENCODING
from settlement.merkle import MerkleTree, leaf_hash, verify_proof
from tests.api.support import account, seed_claim, seed_dispute, seed_epoch

ALICE, BOB, CAROL = account(0xA11CE), account(0xB0B), account(0xCA801)


def _seed(engine: Engine) -> None:
    with engine.begin() as conn:
        seed_epoch(conn, 1, [(ALICE, 600), (BOB, 400)], status="claimable")
        seed_epoch(conn, 2, [(ALICE, 50), (CAROL, 7)], status="claimable")
        seed_epoch(conn, 3, [(ALICE, 11), (BOB, 13)], status="committed", claimable_at=10**12)
        seed_epoch(conn, 4, [(ALICE, 1_000), (BOB, 1)], status="claimable")
        seed_dispute(conn, 4, CAROL, 1_001)  # disputed on-chain: not claimable whatever the row
        seed_claim(conn, 1, 0 if ALICE.lower() < BOB.lower() else 1, ALICE, 600)


def test_royalties_per_epoch_with_totals(engine: Engine, client: TestClient) -> None:
    _seed(engine)
    response = client.get(f"/v1/contributors/{ALICE.lower()}/royalties")
    assert response.status_code == 200
    body = response.json()
    assert body["account"] == ALICE
    by_epoch = {item["epoch"]: item for item in body["items"]}
    assert sorted(by_epoch) == [1, 2, 3, 4]
    assert by_epoch[1] | {"leaf_index": 0} == {
        "epoch": 1,
        "leaf_index": 0,
        "amount": "600",
        "status": "claimable",
        "claimable_at": 1_000,
        "claimed": True,
        "claimable": False,
    }
    assert by_epoch[2]["claimable"] is True
    assert by_epoch[2]["claimed"] is False
    assert by_epoch[3]["status"] == "committed"
    assert by_epoch[3]["claimable"] is False
    assert by_epoch[4]["status"] == "disputed"
    assert by_epoch[4]["claimable"] is False
    assert body["totals"] == {"earned": "661", "claimed": "600", "claimable": "50"}
    assert all(isinstance(item["amount"], str) for item in body["items"])


def test_royalties_filter_and_pages(engine: Engine, client: TestClient) -> None:
    _seed(engine)
    base = f"/v1/contributors/{ALICE.upper().replace('0X', '0x')}/royalties"
    only = client.get(base, params={"status": "claimable"}).json()
    assert [i["epoch"] for i in only["items"]] == [1, 2]
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = client.get(base, params=params).json()
        seen += [i["epoch"] for i in page["items"]]
        assert page["totals"]["earned"] == "661"  # totals never depend on the page
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [1, 2, 3, 4]


def test_proofs_verify_against_the_root(engine: Engine, client: TestClient) -> None:
    _seed(engine)
    body = client.get(f"/v1/contributors/{ALICE}/proofs").json()
    assert [p["epoch"] for p in body["items"]] == [1, 2]  # 3 not yet claimable, 4 disputed
    for proof in body["items"]:
        leaf = leaf_hash(LEAF_ENCODING, (proof["index"], proof["account"], int(proof["amount"])))
        assert verify_proof(proof["root"], leaf, proof["proof"])
        assert all(p.startswith("0x") and len(p) == 66 for p in proof["proof"])
    assert body["items"][0]["claimed"] is True
    assert body["items"][1]["claimed"] is False
    one = client.get(f"/v1/contributors/{ALICE}/proofs", params={"epoch": 2}).json()
    assert [p["epoch"] for p in one["items"]] == [2]
    missing = client.get(f"/v1/contributors/{ALICE}/proofs", params={"epoch": 3})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_proofs_served_from_cached_trees_match_a_rebuild(
    engine: Engine, client: TestClient
) -> None:
    _seed(engine)
    first = client.get(f"/v1/contributors/{BOB}/proofs").json()
    again = client.get(f"/v1/contributors/{BOB}/proofs").json()
    assert first == again
    tree = client.get("/v1/epochs/1/tree").json()
    loaded = MerkleTree.load(tree)
    position = next(i for i, v in enumerate(loaded.values) if v[1] == BOB)
    assert list(loaded.proof(position)) == first["items"][0]["proof"]


def test_claim_all_needs_a_deployment(engine: Engine, client: TestClient) -> None:
    _seed(engine)
    response = client.get(f"/v1/contributors/{CAROL}/claim-all")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


def test_unknown_contributor_has_nothing(engine: Engine, client: TestClient) -> None:
    _seed(engine)
    body = client.get(f"/v1/contributors/{account(5)}/royalties").json()
    assert body["items"] == []
    assert body["totals"] == {
        "earned": "0",
        "claimed": "0",
        "claimable": "0",
    }
    assert client.get(f"/v1/contributors/{account(5)}/proofs").json()["items"] == []


def test_malformed_address_is_a_422_in_the_error_shape(client: TestClient) -> None:
    response = client.get("/v1/contributors/0x1234/royalties")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"][0]["loc"][0] == "path"
