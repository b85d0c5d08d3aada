"""The metering gateway on the real Triton and Kafka: one event per successful inference."""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
from collections import Counter

import httpx
import pytest
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families

from metering.wallet_auth import sign_request
from tests.metering.harness import (
    DOUBLER_MODEL_ID,
    ECHO_MODEL_ID,
    MeteringNode,
    consume_events,
    doubler_body,
    echo_body,
    running_gateway,
)

pytestmark = [pytest.mark.kafka, pytest.mark.triton]


def _tokens(prompt: str) -> int:
    # echo-lm reports the words it read plus the words it wrote (the same words reversed).
    return 2 * len(prompt.split())


def test_n_inferences_from_several_licenses_make_exactly_n_events(node: MeteringNode) -> None:
    plan: list[tuple[int, str, dict[str, object], int]] = []
    for i in range(24):
        license_id = (101, 102, 103)[i % 3]
        prompt = " ".join(f"w{j}" for j in range(1 + i % 5))
        plan.append((license_id, "echo-lm", echo_body(prompt), _tokens(prompt)))
    for batch in (1, 2, 5, 16):
        plan.append((201, "doubler", doubler_body(batch), batch))

    async def run(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"/v2/models/{model}/infer",
                        json=body,
                        headers={"authorization": f"Bearer {node.key(license_id)}"},
                    )
                    for license_id, model, body, _ in plan
                )
            )

    with running_gateway(node) as gw:
        responses = asyncio.run(run(gw.url))
    for response in responses:
        assert response.status_code == 200, response.text
    # Triton's response passes through untouched: the completion is there.
    assert responses[0].json()["outputs"][0]["name"] in ("completion", "tokens")
    acked_ids = [r.headers["x-royalty-usage-id"] for r in responses]

    events = consume_events(node.bootstrap, node.topic, len(plan))
    assert len(events) == len(plan)
    assert sorted(e.id for e in events) == sorted(acked_ids)
    assert len({e.id for e in events}) == len(plan)
    by_id = {e.id: e for e in events}
    for (license_id, model, _, units), response in zip(plan, responses, strict=True):
        event = by_id[response.headers["x-royalty-usage-id"]]
        assert event.data.license_id == license_id
        assert event.data.units == units
        assert event.data.model_id == (ECHO_MODEL_ID if model == "echo-lm" else DOUBLER_MODEL_ID)
        assert event.subject == model
        assert event.source == f"//metering/{node.node_id}"
        assert int(response.headers["x-royalty-units"]) == units
        node.ring.verify(event)  # signed under the node's key, verifiable with the ring


def test_binary_outputs_and_api_key_header(node: MeteringNode) -> None:
    """Tokens are read from Triton's binary tensor extension too; `x-api-key` works."""
    body = echo_body("one two three", parameters={"binary_data_output": True})
    with running_gateway(node) as gw:
        response = httpx.post(
            f"{gw.url}/v2/models/echo-lm/infer",
            json=body,
            headers={"x-api-key": node.key(102)},
            timeout=30,
        )
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:header_length])
    outputs = {o["name"]: o for o in header["outputs"]}
    assert outputs["tokens"]["parameters"]["binary_data_size"] == 8
    offset = header_length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        if output["name"] == "tokens":
            assert struct.unpack("<q", response.content[offset : offset + size]) == (6,)
        offset += size
    (event,) = consume_events(node.bootstrap, node.topic, 1)
    assert event.data.units == 6
    assert event.data.license_id == 102


def test_failed_inferences_produce_no_event(node: MeteringNode) -> None:
    key = {"authorization": f"Bearer {node.key(101)}"}
    doubler_key = {"authorization": f"Bearer {node.key(201)}"}
    with running_gateway(node) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        # Triton refuses these; its status and error pass through unchanged.
        wrong_input = client.post(
            "/v2/models/echo-lm/infer",
            json={
                "inputs": [{"name": "nope", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]
            },
            headers=key,
        )
        wrong_type = client.post(
            "/v2/models/doubler/infer",
            json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]},
            headers=doubler_key,
        )
        ghost = client.post("/v2/models/ghost/infer", json=echo_body("a"), headers=key)
        ok = client.post("/v2/models/echo-lm/infer", json=echo_body("a b"), headers=key)
    for response in (wrong_input, wrong_type, ghost):
        assert 400 <= response.status_code < 500, response.text
        assert "error" in response.json()
        assert "x-royalty-usage-id" not in response.headers
    assert ok.status_code == 200
    events = consume_events(node.bootstrap, node.topic, 1, settle_s=2.0)
    assert [e.id for e in events] == [ok.headers["x-royalty-usage-id"]]


def test_triton_errors_pass_through_unchanged(node: MeteringNode) -> None:
    body = {"inputs": [{"name": "nope", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]}
    direct = httpx.post(f"http://{node.triton_url}/v2/models/echo-lm/infer", json=body, timeout=30)
    with running_gateway(node) as gw:
        proxied = httpx.post(
            f"{gw.url}/v2/models/echo-lm/infer",
            json=body,
            headers={"x-api-key": node.key(101)},
            timeout=30,
        )
    assert proxied.status_code == direct.status_code
    assert proxied.json() == direct.json()


def test_health_metadata_and_metrics(node: MeteringNode) -> None:
    with running_gateway(node) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        meta = client.get("/v2/models/echo-lm")
        assert meta.status_code == 200
        assert meta.json()["name"] == "echo-lm"
        assert client.get("/v2/models/echo-lm/config").status_code == 200
        assert client.get("/v2/models/echo-lm/ready").status_code == 200
        # Not metered here: not exposed, even for metadata.
        assert client.get("/v2/models/unknown").status_code == 404
        # Control and statistics endpoints are never exposed.
        assert client.post("/v2/repository/index").status_code == 404
        assert client.post("/v2/repository/models/echo-lm/unload").status_code == 404
        assert client.get("/v2/models/echo-lm/stats").status_code == 404
        assert client.post("/v2/systemsharedmemory/region/x/register").status_code == 404
        client.post(
            "/v2/models/echo-lm/infer",
            json=echo_body("a b c"),
            headers={"x-api-key": node.key(101)},
        )
        metrics = client.get("/metrics").text
    # Straight to Kafka, or through the spool if it came before the startup probe finished.
    delivery = "kafka" if 'delivery="kafka",model="echo-lm"} 1.0' in metrics else "spool"
    assert f'royalty_metering_events_total{{delivery="{delivery}",model="echo-lm"}} 1.0' in metrics
    # How long the event took to become durable, observed where it went.
    assert f'royalty_metering_durable_seconds_count{{delivery="{delivery}"}} 1.0' in metrics
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    durable = samples[("royalty_metering_durable_seconds_sum", (("delivery", delivery),))]
    request = samples[("royalty_gateway_request_seconds_sum", (("model", "echo-lm"),))]
    assert 0 < durable < request
    assert "royalty_gateway_request_seconds_bucket" in metrics
    assert "royalty_metering_spool_depth " in metrics
    assert "royalty_metering_kafka_errors_total 0.0" in metrics


def test_metadata_requires_a_key_when_configured(node: MeteringNode) -> None:
    node.overrides["auth_metadata"] = True
    with running_gateway(node) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        assert client.get("/v2/models/echo-lm").status_code == 401
        assert (
            client.get("/v2/models/doubler", headers={"x-api-key": node.key(101)}).status_code
            == 403
        )
        assert (
            client.get("/v2/models/echo-lm", headers={"x-api-key": node.key(101)}).status_code
            == 200
        )
        assert client.get("/v2/health/ready").status_code == 200


def test_shared_memory_tensors_are_refused(node: MeteringNode) -> None:
    """A tensor in shared memory never passes through the gateway, so its units could escape
    metering: refused before Triton runs anything, whatever the model's metric or encoding."""
    region = {"shared_memory_region": "r0", "shared_memory_byte_size": 64}
    echo_key = {"x-api-key": node.key(101)}
    plain_output = echo_body("a b", outputs=[{"name": "tokens", "parameters": region}])
    gzipped = gzip.compress(json.dumps(plain_output).encode())
    with running_gateway(node) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        refused = [
            client.post("/v2/models/echo-lm/infer", json=plain_output, headers=echo_key),
            client.post(
                "/v2/models/echo-lm/infer",
                content=gzipped,
                headers={**echo_key, "content-encoding": "gzip"},
            ),
            client.post(
                "/v2/models/doubler/infer",
                json={"inputs": [{**doubler_body(1)["inputs"][0], "parameters": region}]},
                headers={"x-api-key": node.key(201)},
            ),
        ]
        # The words alone, in a prompt, are no reason to refuse.
        innocent = client.post(
            "/v2/models/echo-lm/infer", json=echo_body("shared_memory_region"), headers=echo_key
        )
    for response in refused:
        assert response.status_code == 400, response.text
        assert "shared-memory" in response.json()["error"]
    assert innocent.status_code == 200, innocent.text
    events = consume_events(node.bootstrap, node.topic, 1, settle_s=2.0)
    assert [e.id for e in events] == [innocent.headers["x-royalty-usage-id"]]


def test_hostile_input_gets_clear_errors_and_no_event(node: MeteringNode) -> None:
    node.overrides["max_body_bytes"] = 64 * 1024
    good = {"authorization": f"Bearer {node.key(101)}"}
    statuses: Counter[int] = Counter()
    with running_gateway(node) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:

        def post(path: str, expect: int, **kwargs: object) -> httpx.Response:
            response = client.post(path, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == expect, (path, kwargs.get("headers"), response.text)
            assert response.json()["error"]
            assert "x-royalty-usage-id" not in response.headers
            statuses[expect] += 1
            return response

        infer = "/v2/models/echo-lm/infer"
        body = echo_body("a b")
        # Credentials: missing, malformed, forged, revoked, wrong scheme.
        missing = post(infer, 401, json=body)
        assert "missing credentials" in missing.json()["error"]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        post(infer, 401, json=body, headers={"authorization": "Bearer not-a-key"})
        post(infer, 401, json=body, headers={"x-api-key": ""})
        kid = node.key(101).split("_")[1]
        post(infer, 401, json=body, headers={"x-api-key": f"rk_{kid}_forgedsecret"})
        post(infer, 401, json=body, headers={"x-api-key": "rk_000000000000_forged"})
        post(infer, 401, json=body, headers={"x-api-key": node.revoked_key})
        post(infer, 401, json=body, headers={"authorization": f"Basic {node.key(101)}"})
        # A valid key for another model's license.
        forbidden = post(infer, 403, json=body, headers={"x-api-key": node.key(201)})
        assert "model" in forbidden.json()["error"]
        # Malformed KServe bodies. Those only Triton reads get Triton's own answer (it says
        # 500 for unparsable JSON), the same as when called directly; never billed.
        for raw in (b"{not json", b"[]", b'{"inputs": "nope"}'):
            direct = httpx.post(f"http://{node.triton_url}{infer}", content=raw, timeout=30)
            assert direct.status_code >= 400
            post(infer, direct.status_code, content=raw, headers=good)
        # Those the gateway must read to bill are refused before Triton sees them.
        post(infer, 400, json={"outputs": [{"name": "completion"}], **body}, headers=good)
        post(infer, 400, content=b'{"outputs": [', headers=good)
        post(
            "/v2/models/doubler/infer",
            400,
            json={"inputs": [{"name": "x", "shape": "big", "datatype": "FP32", "data": []}]},
            headers={"x-api-key": node.key(201)},
        )
        post(
            infer,
            400,
            content=b'{"inputs": []}',
            headers={**good, "inference-header-content-length": "99999"},
        )
        # Huge payloads: declared, and streamed without a length.
        post(infer, 413, content=b"x" * (65 * 1024), headers=good)

        def chunks() -> object:
            for _ in range(100):
                yield b"y" * 4096

        post(infer, 413, content=chunks(), headers=good)
        # Unknown models, and paths that are not KServe inference.
        post("/v2/models/no-such-model/infer", 404, json=body, headers=good)
        post("/v2/models/../../etc/infer", 404, json=body, headers=good)
        post("/v2/models/echo-lm/versions/1/infer/extra", 404, json=body, headers=good)
        post("/v2/models/echo-lm/versions/1%3Fx=1/infer", 404, json=body, headers=good)
        # An explicit version is forwarded and recorded.
        versioned = client.post("/v2/models/echo-lm/versions/1/infer", json=body, headers=good)
        assert versioned.status_code == 200, versioned.text
        assert client.put(infer, json=body, headers=good).status_code == 404
        # Still serving after all that.
        ok = client.post(infer, json=body, headers=good)
        assert ok.status_code == 200
    assert statuses[401] >= 7
    events = consume_events(node.bootstrap, node.topic, 2, settle_s=2.0)
    assert sorted(e.id for e in events) == sorted(
        r.headers["x-royalty-usage-id"] for r in (ok, versioned)
    )
    assert {e.data.model_version for e in events} == {"1"}


def test_wallet_signed_requests(node: MeteringNode) -> None:
    """A request signed by the license owner's wallet is billed to that license, once."""
    owner, stranger = Account.create(), Account.create()
    licenses = node.root / "licenses.json"
    licenses.write_text(
        json.dumps({"licenses": [{"license_id": "777", "model_id": "1", "owner": owner.address}]})
    )
    node.overrides["licenses_file"] = str(licenses)
    body = json.dumps(echo_body("signed by a wallet")).encode()
    infer = "/v2/models/echo-lm/infer"
    with running_gateway(node) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        signed = sign_request(owner.key.hex(), "echo-lm", 777, body)
        ok = client.post(infer, content=body, headers=signed)
        replay = client.post(infer, content=body, headers=signed)
        forged = client.post(
            infer, content=body, headers=sign_request(stranger.key.hex(), "echo-lm", 777, body)
        )
        other_model = client.post(
            "/v2/models/doubler/infer",
            content=body,
            headers=sign_request(owner.key.hex(), "doubler", 777, body),
        )
    assert ok.status_code == 200, ok.text
    assert replay.status_code == 401
    assert "replayed" in replay.json()["error"]
    assert forged.status_code == 401
    assert other_model.status_code == 403
    (event,) = consume_events(node.bootstrap, node.topic, 1, settle_s=2.0)
    assert event.data.license_id == 777
    assert event.id == ok.headers["x-royalty-usage-id"]
