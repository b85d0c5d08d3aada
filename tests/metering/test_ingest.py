"""HTTP ingest (`POST /v1/usage`) on the real Kafka: authenticated, validated, durable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from api.ingest import CLOUDEVENTS_BATCH
from api.ingest_app import create_ingest_app
from metering.keyfiles import save_operator_records
from metering.operators import issue_operator_token
from metering.signing import Signer, SigningKey
from schemas.usage import UsageData, UsageEvent
from tests.metering.harness import PEPPER, GatewayThread, MeteringNode, consume_events

pytestmark = pytest.mark.kafka


def _event(signer: Signer, i: int, **data: Any) -> dict[str, Any]:
    event = UsageEvent.create(
        id=f"op-node:{i}",
        source="//metering/op-node",
        time=datetime(2026, 1, 1, 12, 0, i % 60, tzinfo=UTC),
        keyid=signer.keyid,
        data=UsageData(model_id=1, license_id=101, units=1 + i, **data),
    )
    return signer.sign(event).model_dump(mode="json", exclude_none=True)


@pytest.fixture
def ingest(node: MeteringNode) -> Iterator[tuple[httpx.Client, str, Signer]]:
    """The ingest app served on a free port, an operator token, and the operator's signer."""
    token, record = issue_operator_token(PEPPER.encode(), "acme", [node.signing_key.keyid])
    save_operator_records(node.root / "metering" / "operators.json", [record])
    server = GatewayThread(create_ingest_app(node.settings())).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client, token, Signer(node.signing_key)
    finally:
        server.stop()


def _post(client: httpx.Client, token: str | None, body: object, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"content-type": CLOUDEVENTS_BATCH, **headers}
    if token is not None:
        hdrs["authorization"] = f"Bearer {token}"
    return client.post("/v1/usage", content=content, headers=hdrs)


def test_valid_batch_reaches_kafka(
    ingest: tuple[httpx.Client, str, Signer], node: MeteringNode
) -> None:
    client, token, signer = ingest
    batch = [_event(signer, i) for i in range(25)]
    response = _post(client, token, batch)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 25
    events = consume_events(node.bootstrap, node.topic, 25)
    assert sorted(e.id for e in events) == sorted(f"op-node:{i}" for i in range(25))
    for e in events:
        node.ring.verify(e)  # the operator's signature travels unchanged


def test_invalid_events_get_per_event_errors_and_nothing_is_published(
    ingest: tuple[httpx.Client, str, Signer], node: MeteringNode
) -> None:
    client, token, signer = ingest
    stranger = Signer(SigningKey.generate(prefix="stranger"))
    good = _event(signer, 1)
    forged = {**_event(signer, 2), "data": {**_event(signer, 2)["data"], "units": 999}}
    batch: list[Any] = [
        good,
        forged,  # signature no longer matches
        _event(stranger, 3),  # a key id that is not acme's
        {**_event(signer, 4), "specversion": "0.3"},  # malformed
        {k: v for k, v in _event(signer, 5).items() if k != "signature"},  # unsigned
        "not an object",
        good,  # duplicate id within the batch
    ]
    response = _post(client, token, batch)
    assert response.status_code == 422
    errors = {e["index"]: e for e in response.json()["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert errors[1]["reason"] == "bad_signature"
    assert errors[2]["reason"] == "bad_signature"
    assert errors[3]["reason"] == "malformed"
    assert "specversion" in errors[3]["detail"]
    assert errors[4]["reason"] == "bad_signature"
    assert errors[5]["reason"] == "malformed"
    assert errors[6]["reason"] == "duplicate"
    assert consume_events(node.bootstrap, node.topic, 0, timeout_s=3, settle_s=2) == []


def test_authentication_and_envelope_errors(ingest: tuple[httpx.Client, str, Signer]) -> None:
    client, token, signer = ingest
    batch = [_event(signer, 1)]
    assert _post(client, None, batch).status_code == 401
    assert _post(client, "ro_000000000000_nope", batch).status_code == 401
    assert _post(client, token[:-2] + "xx", batch).status_code == 401
    wrong_type = _post(client, token, batch, **{"content-type": "application/json"})
    assert wrong_type.status_code == 415
    assert _post(client, token, b"{not json").status_code == 400
    assert _post(client, token, b'{"a": 1, "a": 2}').status_code == 400
    assert _post(client, token, {"not": "an array"}).status_code == 400
    assert _post(client, token, [_event(signer, i) for i in range(1001)]).status_code == 413
    assert _post(client, token, b"[" + b" " * (1024 * 1024) + b"]").status_code == 413
    ok = _post(client, token, [])
    assert ok.status_code == 202
    assert ok.json()["accepted"] == 0
