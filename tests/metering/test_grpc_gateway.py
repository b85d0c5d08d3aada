"""The gateway's gRPC side on the real Triton and Kafka: one event per successful ModelInfer,
Triton's errors passed through, credentials and scope enforced, dangerous methods refused."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from deploy.local import KafkaBroker, TritonServer
from deploy.local.process import free_port
from metering.errors import InvalidInput
from metering.grpc_gateway import _request_body, _response_body
from metering.settings import billing_table
from royalty.config import MeteringSettings
from tests.metering.harness import (
    DOUBLER_MODEL_ID,
    ECHO_MODEL_ID,
    MODELS,
    PEPPER,
    GatewayThread,
    MeteringNode,
    consume_events,
    running_gateway,
)

BILLING = billing_table(MeteringSettings(models=MODELS, api_key_pepper=PEPPER))


@pytest.fixture
def grpc_node(
    tmp_path: Path, kafka_broker: KafkaBroker, triton_server: TritonServer, usage_topic: str
) -> MeteringNode:
    return MeteringNode(
        tmp_path,
        kafka_broker.bootstrap_servers,
        usage_topic,
        triton_server.http_url,
        overrides={"grpc_port": free_port()},
        triton_grpc_url=triton_server.grpc_url,
    )


@pytest.fixture
def gateway(grpc_node: MeteringNode) -> Iterator[GatewayThread]:
    with running_gateway(grpc_node) as gw:
        yield gw


def _client(node: MeteringNode) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{node.overrides['grpc_port']}")


def _echo(prompt: str, outputs: list[str] | None = None) -> dict[str, object]:
    data = np.array([[prompt.encode()]], dtype=np.object_)
    prompt_input = grpcclient.InferInput("prompt", [1, 1], "BYTES")
    prompt_input.set_data_from_numpy(data)
    wanted = [grpcclient.InferRequestedOutput(name) for name in outputs or []]
    return {"model_name": "echo-lm", "inputs": [prompt_input], "outputs": wanted or None}


def _doubler(batch: int) -> dict[str, object]:
    x = grpcclient.InferInput("x", [batch, 3], "FP32")
    x.set_data_from_numpy(np.arange(batch * 3, dtype=np.float32).reshape(batch, 3))
    return {"model_name": "doubler", "inputs": [x]}


def _refused(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return caught.value


@pytest.mark.kafka
@pytest.mark.triton
def test_n_grpc_inferences_from_several_licenses_make_exactly_n_events(
    grpc_node: MeteringNode, gateway: GatewayThread
) -> None:
    plan: list[tuple[int, dict[str, object], int, int]] = []
    for i in range(12):
        prompt = " ".join(f"w{j}" for j in range(1 + i % 4))
        # echo-lm's tokens: the words it read plus the words it wrote.
        plan.append(((101, 102, 103)[i % 3], _echo(prompt), 2 * len(prompt.split()), ECHO_MODEL_ID))
    for batch in (1, 4, 9):
        plan.append((201, _doubler(batch), batch, DOUBLER_MODEL_ID))

    def infer(item: tuple[int, dict[str, object], int, int]) -> grpcclient.InferResult:
        license_id, request, _, _ = item
        with _client(grpc_node) as client:
            return client.infer(**request, headers={"x-api-key": grpc_node.key(license_id)})

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(infer, plan))
    assert results[0].as_numpy("tokens") is not None  # Triton's answer, as Triton sent it
    events = consume_events(grpc_node.bootstrap, grpc_node.topic, len(plan))
    assert len(events) == len(plan) == len({e.id for e in events})
    got = sorted((e.data.license_id, e.data.model_id, e.data.units) for e in events)
    assert got == sorted((lic, model_id, units) for lic, _, units, model_id in plan)
    for event in events:
        grpc_node.ring.verify(event)


@pytest.mark.kafka
@pytest.mark.triton
def test_grpc_request_naming_its_outputs(grpc_node: MeteringNode, gateway: GatewayThread) -> None:
    """A request that names its outputs, the units tensor among them, is billed by it."""
    with _client(grpc_node) as client:
        named = client.infer(**_echo("a b c", outputs=["tokens", "completion"]),
                             headers={"authorization": f"Bearer {grpc_node.key(101)}"})  # fmt: skip
        assert int(named.as_numpy("tokens").sum()) == 6
    (event,) = consume_events(grpc_node.bootstrap, grpc_node.topic, 1)
    assert (event.data.units, event.data.license_id) == (6, 101)


@pytest.mark.kafka
@pytest.mark.triton
def test_grpc_usage_id_and_units_in_the_trailing_metadata(
    grpc_node: MeteringNode, gateway: GatewayThread
) -> None:
    request = pb.ModelInferRequest(model_name="echo-lm")
    request.inputs.add(name="prompt", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(struct.pack("<I", 5) + b"a b c")
    address = f"127.0.0.1:{grpc_node.overrides['grpc_port']}"
    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        answer, call = infer.with_call(
            request.SerializeToString(), metadata=(("x-api-key", grpc_node.key(103)),)
        )
    trailers = dict(call.trailing_metadata())
    assert pb.ModelInferResponse.FromString(answer).model_name == "echo-lm"
    assert trailers["x-royalty-units"] == "6"
    (event,) = consume_events(grpc_node.bootstrap, grpc_node.topic, 1)
    assert trailers["x-royalty-usage-id"] == event.id
    assert (event.data.license_id, event.data.units) == (103, 6)


@pytest.mark.kafka
@pytest.mark.triton
def test_grpc_refusals_make_no_event(grpc_node: MeteringNode, gateway: GatewayThread) -> None:
    key = {"x-api-key": grpc_node.key(101)}
    with _client(grpc_node) as client:
        missing = _refused(lambda: client.infer(**_echo("a")))
        assert missing.status() == "StatusCode.UNAUTHENTICATED"
        forged = _refused(lambda: client.infer(**_echo("a"), headers={"x-api-key": "forged"}))
        assert forged.status() == "StatusCode.UNAUTHENTICATED"
        revoked = _refused(
            lambda: client.infer(**_echo("a"), headers={"x-api-key": grpc_node.revoked_key})
        )
        assert revoked.status() in ("StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED")
        # License 101 is for model 1; the doubler is model 2.
        scope = _refused(lambda: client.infer(**_doubler(1), headers=key))
        assert scope.status() == "StatusCode.PERMISSION_DENIED"
        unknown = _refused(lambda: client.infer(model_name="nope", inputs=[], headers=key))
        assert unknown.status() == "StatusCode.NOT_FOUND"
        # Tokens are read from the `tokens` output: a request leaving it out is refused.
        blind = _refused(lambda: client.infer(**_echo("a", outputs=["completion"]), headers=key))
        assert blind.status() == "StatusCode.INVALID_ARGUMENT"
        assert "tokens" in blind.message()
        # A tensor in shared memory would escape metering: refused before Triton runs it.
        shm = _echo("a")
        shm["inputs"][0].set_shared_memory("region", 64)  # type: ignore[index]
        shared = _refused(lambda: client.infer(**shm, headers=key))
        assert shared.status() == "StatusCode.INVALID_ARGUMENT"
        assert "shared-memory" in shared.message()
        # Triton's own error passes through with its code: no such input.
        wrong = grpcclient.InferInput("nope", [1, 1], "BYTES")
        wrong.set_data_from_numpy(np.array([[b"x"]], dtype=np.object_))
        triton = _refused(lambda: client.infer("echo-lm", [wrong], headers=key))
        with grpcclient.InferenceServerClient(grpc_node.triton_grpc_url) as direct:
            same = _refused(lambda: direct.infer("echo-lm", [wrong]))
        assert (triton.status(), triton.message()) == (same.status(), same.message())
        # Metered here, not served by Triton: Triton's answer.
        ghost = _refused(lambda: client.infer(**{**_echo("a"), "model_name": "ghost"}, headers=key))
        assert ghost.status() != "StatusCode.OK"
        ok = client.infer(**_echo("a b"), headers=key)
    assert int(ok.as_numpy("tokens").sum()) == 4
    events = consume_events(grpc_node.bootstrap, grpc_node.topic, 1, settle_s=2.0)
    assert [(e.data.license_id, e.data.units) for e in events] == [(101, 4)]


@pytest.mark.kafka
@pytest.mark.triton
def test_grpc_health_metadata_and_refused_methods(
    grpc_node: MeteringNode, gateway: GatewayThread
) -> None:
    with _client(grpc_node) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.get_server_metadata().name
        assert client.is_model_ready("echo-lm")
        assert client.get_model_metadata("echo-lm").name == "echo-lm"
        assert client.get_model_config("doubler").config.name == "doubler"
        hidden = _refused(lambda: client.get_model_metadata("not-metered"))
        assert hidden.status() == "StatusCode.NOT_FOUND"
        for refused in (
            lambda: client.get_model_repository_index(),
            lambda: client.load_model("echo-lm"),
            lambda: client.unload_model("echo-lm"),
            lambda: client.get_inference_statistics(),
            lambda: client.get_system_shared_memory_status(),
            lambda: client.get_log_settings(),
        ):
            assert _refused(refused).status() == "StatusCode.PERMISSION_DENIED"
        # Streamed inference is not metered here: refused, not passed through unmetered.
        errors: list[InferenceServerException] = []
        client.start_stream(
            callback=lambda result, error: errors.append(error),
            headers={"x-api-key": grpc_node.key(101)},
        )
        # The gateway ends the stream at once; a request sent after that is refused locally.
        with contextlib.suppress(InferenceServerException):
            client.async_stream_infer(**_echo("a"))
        client.stop_stream()
    assert (errors and "StatusCode.UNIMPLEMENTED" in str(errors[0])) or not errors
    assert not consume_events(grpc_node.bootstrap, grpc_node.topic, 0, settle_s=1.0)


@pytest.mark.kafka
@pytest.mark.triton
def test_grpc_messages_above_the_limit_are_refused(grpc_node: MeteringNode) -> None:
    grpc_node.overrides["max_body_bytes"] = 4096
    with running_gateway(grpc_node), _client(grpc_node) as client:
        huge = _refused(
            lambda: client.infer(**_echo("w " * 100_000), headers={"x-api-key": grpc_node.key(101)})
        )
    assert huge.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert not consume_events(grpc_node.bootstrap, grpc_node.topic, 0, settle_s=1.0)


def _response(outputs: list[tuple[str, str, list[int]]], raw: list[bytes] | None = None) -> bytes:
    response = pb.ModelInferResponse(model_name="echo-lm", model_version="3")
    for name, datatype, values in outputs:
        tensor = response.outputs.add(name=name, datatype=datatype, shape=[len(values)])
        if raw is None and datatype == "INT64":
            tensor.contents.int64_contents.extend(values)
        elif raw is None and datatype == "UINT32":
            tensor.contents.uint_contents.extend(values)
    response.raw_output_contents.extend(raw or [])
    return response.SerializeToString()


def test_grpc_units_from_typed_and_raw_contents() -> None:
    """Triton answers tritonclient with raw contents; other clients may get typed ones."""
    tokens = BILLING["echo-lm"]
    typed = _response_body(_response([("completion", "BYTES", []), ("tokens", "INT64", [2, 5])]))
    assert tokens.units(None, typed) == 7
    assert typed.header["model_version"] == "3"
    unsigned = _response_body(_response([("tokens", "UINT32", [4])]))
    assert tokens.units(None, unsigned) == 4
    raw = _response_body(
        _response(
            [("completion", "BYTES", [0]), ("tokens", "INT64", [0, 0])],
            raw=[b"\x00\x00\x00\x01x", struct.pack("<2q", 3, 4)],
        )
    )
    assert tokens.units(None, raw) == 7
    for broken, reason in (
        (_response([("tokens", "INT64", [1])], raw=[b"", b""]), "raw output contents"),
        (_response([("tokens", "FP32", [])]), "not an integer"),
        (_response([("other", "INT64", [1])]), "no output 'tokens'"),
        (b"\xff\xff", "malformed ModelInferResponse"),
    ):
        with pytest.raises(InvalidInput, match=reason):
            tokens.units(None, _response_body(broken))


def test_grpc_request_shapes_and_outputs_checked_before_inference() -> None:
    request = pb.ModelInferRequest(model_name="doubler")
    request.inputs.add(name="x", datatype="FP32", shape=[5, 3])
    body = _request_body(BILLING["doubler"], request)
    assert BILLING["doubler"].units(body, None) == 5
    assert _request_body(BILLING["ghost"], request) is None  # billed per request: not read
    echo = pb.ModelInferRequest(model_name="echo-lm")
    echo.inputs.add(name="prompt", datatype="BYTES", shape=[1, 1])
    assert _request_body(BILLING["echo-lm"], echo) is not None
    echo.outputs.add(name="completion")
    with pytest.raises(InvalidInput, match="tokens"):
        _request_body(BILLING["echo-lm"], echo)
    scalar = pb.ModelInferRequest(model_name="doubler")
    scalar.inputs.add(name="x", datatype="FP32", shape=[])
    with pytest.raises(InvalidInput, match="scalar"):
        _request_body(BILLING["doubler"], scalar)
