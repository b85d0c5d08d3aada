"""API keys (hashed only, scopes, revocation), admin endpoints, usage and rejection summaries,
and rate limits, over SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.auth import create_key, hash_key
from settlement.merkle import verify_proof
from settlement.usage_root import epoch_usage_root
from tests.api.conftest import AppFactory, settings
from tests.api.support import PEPPER, T, seed_accrual, seed_dead_letter


def _key(engine: Engine, *scopes: str, rate: int | None = None) -> str:
    with engine.begin() as conn:
        created = create_key(
            conn, name="ops", scopes=scopes, pepper=PEPPER.encode(), rate_limit_per_s=rate
        )
    return created.secret


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_stored_hashed_only(engine: Engine, client: TestClient) -> None:
    admin = _key(engine, "admin")
    response = client.post(
        "/v1/admin/api-keys", json={"name": "settler", "scopes": ["settle"]}, headers=_bearer(admin)
    )
    assert response.status_code == 201
    created = response.json()
    assert created["key"].startswith(f"rk_{created['key_id']}_")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(T["api_keys"])).all()
    stored = {r.key_id: r for r in rows}
    assert stored[created["key_id"]].key_hash == hash_key(created["key"], PEPPER.encode())
    for row in rows:
        assert all(secret not in tuple(row) for secret in (admin, created["key"]))


def test_missing_wrong_revoked_key_is_401_and_wrong_scope_403(
    engine: Engine, client: TestClient
) -> None:
    admin, settle_only = _key(engine, "admin"), _key(engine, "settle")
    url = "/v1/admin/dead-letters"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Basic abc"}).status_code == 401
    unknown = admin[:-4] + ("AAAA" if not admin.endswith("AAAA") else "BBBB")
    wrong = client.get(url, headers=_bearer(unknown))
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    forbidden = client.get(url, headers=_bearer(settle_only))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert client.get(url, headers=_bearer(admin)).status_code == 200
    victim = client.post(
        "/v1/admin/api-keys", json={"name": "temp", "scopes": ["admin"]}, headers=_bearer(admin)
    ).json()
    assert client.get(url, headers=_bearer(victim["key"])).status_code == 200
    revoked = client.delete(f"/v1/admin/api-keys/{victim['key_id']}", headers=_bearer(admin))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert client.get(url, headers=_bearer(victim["key"])).status_code == 401
    assert (
        client.delete("/v1/admin/api-keys/00000000000000ff", headers=_bearer(admin)).status_code
        == 404
    )
    bad_scope = client.post(
        "/v1/admin/api-keys", json={"name": "x", "scopes": ["root"]}, headers=_bearer(admin)
    )
    assert bad_scope.status_code == 422


def test_without_a_pepper_no_key_authenticates(engine: Engine, make_client: AppFactory) -> None:
    admin = _key(engine, "admin")
    client = make_client(api=settings(key_pepper=None))
    assert client.get("/v1/admin/dead-letters", headers=_bearer(admin)).status_code == 401


def test_dead_letters_page_and_rejection_summary(engine: Engine, client: TestClient) -> None:
    admin = _key(engine, "admin")
    day1, day2 = datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 2, 23, 59, tzinfo=UTC)
    with engine.begin() as conn:
        for i in range(3):
            seed_dead_letter(conn, "expired", day1, f"e-{i}")
        seed_dead_letter(conn, "bad_signature", day1, "b-1")
        seed_dead_letter(conn, "expired", day2, "e-9")
    first = client.get("/v1/admin/dead-letters", params={"limit": 3}, headers=_bearer(admin)).json()
    rest = client.get(
        "/v1/admin/dead-letters",
        params={"limit": 3, "cursor": first["next_cursor"]},
        headers=_bearer(admin),
    ).json()
    ids = [d["usage_id"] for d in first["items"] + rest["items"]]
    assert ids == ["e-0", "e-1", "e-2", "b-1", "e-9"]
    assert rest["next_cursor"] is None
    only = client.get(
        "/v1/admin/dead-letters", params={"reason": "bad_signature"}, headers=_bearer(admin)
    ).json()
    assert [d["usage_id"] for d in only["items"]] == ["b-1"]
    summary = client.get("/v1/rejections/summary").json()["items"]
    assert summary == [
        {"day": "2026-03-01", "reason": "bad_signature", "count": 1},
        {"day": "2026-03-01", "reason": "expired", "count": 3},
        {"day": "2026-03-02", "reason": "expired", "count": 1},
    ]


def test_usage_summary(engine: Engine, client: TestClient) -> None:
    huge = 10**30
    with engine.begin() as conn:
        seed_accrual(conn, "a", epoch=1, model_id=1, license_id=1, units=2, price_e6=huge)
        seed_accrual(conn, "b", epoch=1, model_id=1, license_id=2, units=3, price_e6=huge)
        seed_accrual(conn, "c", epoch=1, model_id=2, license_id=3, units=1, price_e6=7)
        seed_accrual(conn, "d", epoch=2, model_id=1, license_id=1, units=4, price_e6=1)
    items = client.get("/v1/usage/summary").json()["items"]
    assert items == [
        {"model_id": "1", "epoch": 1, "accruals": 2, "units": "5", "fees_e6": str(5 * huge)},
        {"model_id": "2", "epoch": 1, "accruals": 1, "units": "1", "fees_e6": "7"},
        {"model_id": "1", "epoch": 2, "accruals": 1, "units": "4", "fees_e6": "4"},
    ]
    model_1 = client.get("/v1/usage/summary", params={"model_id": "1", "epoch": 2}).json()
    assert [(g["model_id"], g["epoch"]) for g in model_1["items"]] == [("1", 2)]
    paged = client.get("/v1/usage/summary", params={"limit": 2}).json()
    tail = client.get("/v1/usage/summary", params={"cursor": paged["next_cursor"]}).json()
    assert paged["items"] + tail["items"] == items


def test_usage_receipt(engine: Engine, client: TestClient) -> None:
    with engine.begin() as conn:
        for i in range(5):
            seed_accrual(
                conn, f"use-{i}", epoch=3, model_id=1, license_id=2, units=i + 1, price_e6=10**24,
                settled_epoch=3,
            )  # fmt: skip
        seed_accrual(conn, "late", epoch=3, model_id=1, license_id=2, units=1, price_e6=1)
    body = client.get("/v1/usage/use-2/receipt").json()
    assert body["usage_id"] == "use-2"
    assert body["epoch"] == "3"
    assert body["leaf"][1:] == ["1", "2", "3", str(3 * 3_600 + 1), str(3 * 10**24)]
    assert verify_proof(body["root"], body["leaf_hash"], body["proof"])
    with engine.connect() as conn:
        root, count = epoch_usage_root(conn, 3)
    assert body["root"] == "0x" + root.hex()
    assert count == 5
    not_billed_yet = client.get("/v1/usage/late/receipt")
    assert not_billed_yet.status_code == 404
    assert client.get("/v1/usage/never-seen/receipt").json()["error"]["code"] == "not_found"


def test_public_rate_limit_answers_429_with_retry_after(make_client: AppFactory) -> None:
    client = make_client(api=settings(rate_limit_per_s=0.5, rate_limit_burst=3))
    statuses = [client.get("/v1/epochs").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = client.get("/v1/epochs")
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get("/healthz").status_code == 200  # probes are never limited


def test_admin_rate_limit_is_per_key(engine: Engine, make_client: AppFactory) -> None:
    client = make_client(api=settings(admin_rate_limit_per_s=0.01))
    first, second = _key(engine, "admin"), _key(engine, "admin", rate=1_000)
    url = "/v1/admin/dead-letters"
    assert client.get(url, headers=_bearer(first)).status_code == 200
    limited = client.get(url, headers=_bearer(first))
    assert limited.status_code == 429
    assert "Retry-After" in limited.headers
    assert all(client.get(url, headers=_bearer(second)).status_code == 200 for _ in range(5))
