"""The metering gateway's gRPC side: Triton's KServe v2 gRPC service, metered.

Served next to the HTTP gateway, in the same process and event loop, when `metering.grpc_port`
is set; it forwards to `triton.grpc_url` and shares the HTTP side's API keys, billing table,
producer and metrics (`MeteringGateway`).

- `ModelInfer`: the API key comes from the call's metadata (`x-api-key: <key>`, or
  `authorization: Bearer <key>`); the license must cover the model; tensors in shared memory
  are refused (an output written there would escape the units count). The request goes to Triton
  as the bytes the client sent; it is decoded only to read the model, its shapes and the
  outputs it asks for. When Triton answers, the units of the model's billing metric are read
  (from the response's integer output tensor for `tokens`), one usage event is made durable,
  and only then does the client get Triton's answer, as Triton sent it, with
  `x-royalty-usage-id` and `x-royalty-units` in the trailing metadata. Triton's errors
  (status code and message) pass through unchanged and produce no event.
- `ServerLive`, `ServerReady`, `ServerMetadata`: proxied, no credentials.
- `ModelReady`, `ModelMetadata`, `ModelConfig`: for metered models (`NOT_FOUND` otherwise);
  credentials only when `auth_metadata` is set.
- `ModelStreamInfer`: `UNIMPLEMENTED`. Streamed (decoupled) inference is not metered here: use
  `ModelInfer`, or meter inside the model (`metering.pytriton_metering`).
- Model repository control, statistics, shared memory, trace and log settings:
  `PERMISSION_DENIED`, as the HTTP side answers 404 (they would let a caller load models, read
  other tenants' traffic, or bypass metering).

Wallet-signed requests are HTTP only (their signature covers the HTTP body). Domain errors map
onto gRPC codes as the HTTP statuses do: 400 `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 403
`PERMISSION_DENIED`, 404 `NOT_FOUND`, 413 `RESOURCE_EXHAUSTED`, 502 `INTERNAL`, 503
`UNAVAILABLE`, 504 `DEADLINE_EXCEEDED`. Credentials never reach Triton: no client metadata is
forwarded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from metering.auth import LicenseGrant, api_key_from_headers
from metering.billing import ModelBilling
from metering.errors import (
    AuthenticationFailed,
    InvalidInput,
    MeteringError,
    SpoolFull,
)
from metering.gateway import MeteringGateway, model_version_of
from metering.kserve import InferenceBody, refuse_shared_memory

log = structlog.get_logger(__name__)

SERVICE = "inference.GRPCInferenceService"
_OPEN = ("ServerLive", "ServerReady", "ServerMetadata")
_MODEL_SCOPED: dict[str, Any] = {
    "ModelReady": pb.ModelReadyRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelConfig": pb.ModelConfigRequest,
}
_REFUSED = (
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Where an integer tensor's values are in a response that does not use raw contents.
_CONTENTS = {
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class _Abort(Exception):  # noqa: N818 - internal control flow, never escapes the handler
    """End the call with this code and message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def grpc_code(exc: MeteringError) -> grpc.StatusCode:
    """The gRPC code of a domain error (the HTTP side's status, translated)."""
    return _CODES.get(int(getattr(exc, "status", 500)), grpc.StatusCode.INTERNAL)


class GrpcGateway:
    """The gRPC server of one gateway: `start()` and `stop()` run inside its event loop (the
    HTTP gateway's lifespan calls them)."""

    def __init__(
        self,
        gateway: MeteringGateway,
        *,
        triton_url: str,
        host: str,
        port: int,
        max_message_bytes: int,
    ) -> None:
        self.gateway = gateway
        self.triton_url = triton_url.removeprefix("grpc://").removeprefix("http://")
        self.address = f"{host}:{port}"
        self.max_message_bytes = max_message_bytes
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._upstream: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}

    async def start(self) -> None:
        """Open the channel to Triton and start serving."""
        limits = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]
        self._channel = grpc.aio.insecure_channel(self.triton_url, options=limits)
        names = ("ModelInfer", *_OPEN, *_MODEL_SCOPED)
        # No serializers: requests and answers pass through as the bytes they are.
        self._upstream = {n: self._channel.unary_unary(f"/{SERVICE}/{n}") for n in names}
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self._infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self._stream_infer),
        }
        for name in _OPEN:
            handlers[name] = grpc.unary_unary_rpc_method_handler(self._proxy(name, None))
        for name, request_type in _MODEL_SCOPED.items():
            handlers[name] = grpc.unary_unary_rpc_method_handler(self._proxy(name, request_type))
        for name in _REFUSED:
            handlers[name] = grpc.unary_unary_rpc_method_handler(self._refuse(name))
        self._server = grpc.aio.server(options=limits)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.port = self._server.add_insecure_port(self.address)
        await self._server.start()
        log.info("metering gateway serving gRPC", address=self.address, port=self.port)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Finish the calls in flight (up to `grace_s`), then close the channel."""
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._channel is not None:
            await self._channel.close()

    # -- inference -----------------------------------------------------------------------

    async def _infer(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        gw = self.gateway
        started = time.perf_counter()
        gw._in_flight += 1
        try:
            answer, model = await self._metered_infer(raw, context)
        except MeteringError as exc:
            abort = _Abort(grpc_code(exc), str(exc))
            if abort.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                gw._child(gw.metrics.auth_failures, str(getattr(exc, "status", 0))).inc()
        except _Abort as exc:
            abort = exc
        else:
            gw._child(gw.metrics.requests, "grpc-infer", "OK").inc()
            gw._child(gw.metrics.latency, model).observe(time.perf_counter() - started)
            return answer
        finally:
            gw._in_flight -= 1
        gw._child(gw.metrics.requests, "grpc-infer", abort.code.name).inc()
        await context.abort(abort.code, abort.details)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _metered_infer(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> tuple[bytes, str]:
        gw = self.gateway
        metadata = _metadata(context)
        api_key = api_key_from_headers(metadata)
        if api_key is None:
            raise AuthenticationFailed(
                "missing credentials: send the API key as `x-api-key` or "
                "`authorization: Bearer <key>` metadata (wallet-signed requests: HTTP only)"
            )
        grant: LicenseGrant = gw.api_keys().authenticate(api_key)
        try:
            request = pb.ModelInferRequest.FromString(raw)
        except DecodeError as exc:
            raise InvalidInput(f"malformed ModelInferRequest: {exc}") from exc
        billing = gw.billing.require(request.model_name)
        grant.authorize(billing)
        refuse_shared_memory(
            (t.name, t.parameters.keys()) for t in (*request.inputs, *request.outputs)
        )
        if not gw.producer.has_room(gw._in_flight):
            gw.metrics.refused.inc()
            raise SpoolFull("usage spool full: inference refused until it drains")
        request_body = _request_body(billing, request)
        started = time.perf_counter()
        answer = await self._call("ModelInfer", raw, context)
        upstream_s = time.perf_counter() - started
        completed_at = datetime.now(UTC)
        model = billing.name
        gw._child(gw.metrics.upstream_latency, model).observe(upstream_s)
        gw._child(gw.metrics.inferences, model).inc()
        response = gw.read_units_body(billing, lambda: _response_body(answer))
        units = gw.units_of(billing, request_body, response)
        usage_id = await gw.record_usage(
            billing,
            grant,
            units,
            completed_at=completed_at,
            model_version=request.model_version or model_version_of(response),
            request_id=request.id or None,
            upstream_s=upstream_s,
        )
        # In the trailers, sent with the status: initial metadata would cost a send of its own.
        trailers = [("x-royalty-units", str(units))]
        if usage_id is not None:
            trailers.append(("x-royalty-usage-id", usage_id))
        context.set_trailing_metadata(trailers)
        return answer, model

    async def _stream_infer(self, _requests: Any, context: grpc.aio.ServicerContext) -> Any:
        self.gateway._child(self.gateway.metrics.requests, "grpc-stream", "UNIMPLEMENTED").inc()
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "streamed inference is not metered by this gateway: use ModelInfer",
        )

    # -- other methods -------------------------------------------------------------------

    def _proxy(self, name: str, request_type: Any) -> Handler:
        async def proxy(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            gw = self.gateway
            try:
                if request_type is not None:
                    self._check_model_scoped(request_type, raw, context)
                answer = await self._call(name, raw, context)
            except MeteringError as exc:
                abort = _Abort(grpc_code(exc), str(exc))
            except _Abort as exc:
                abort = exc
            else:
                gw._child(gw.metrics.requests, "grpc-metadata", "OK").inc()
                return answer
            gw._child(gw.metrics.requests, "grpc-metadata", abort.code.name).inc()
            await context.abort(abort.code, abort.details)
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

        return proxy

    def _check_model_scoped(
        self, request_type: Any, raw: bytes, context: grpc.aio.ServicerContext
    ) -> None:
        gw = self.gateway
        try:
            request = request_type.FromString(raw)
        except DecodeError as exc:
            raise InvalidInput(f"malformed request: {exc}") from exc
        # An unknown model is `NOT_FOUND` (404), like any domain error, by `grpc_code`.
        gw.check_metadata_access(_metadata(context), gw.billing.require(request.name))

    def _refuse(self, name: str) -> Handler:
        async def refuse(_raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.gateway._child(self.gateway.metrics.requests, "grpc-other", "DENIED").inc()
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name} is not available through the metering gateway",
            )
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

        return refuse

    async def _call(self, name: str, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Triton's answer to `raw`; its error, unchanged, as an `_Abort`."""
        timeout = self.gateway.config.upstream_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))
        try:
            answer: bytes = await self._upstream[name](raw, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _Abort(exc.code(), exc.details() or "") from exc
        return answer


# -- protobuf to the billing's view -----------------------------------------------------------


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


def _request_body(billing: ModelBilling, request: Any) -> InferenceBody | None:
    """What billing reads of a request (shapes, outputs asked for), checked before Triton
    runs it: a request whose units could not be read afterwards is refused."""
    if not billing.reads_request:
        return None
    header: dict[str, Any] = {
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in request.inputs
        ]
    }
    if request.outputs:
        header["outputs"] = [{"name": o.name} for o in request.outputs]
    body = InferenceBody(header)
    try:
        billing.check_request(body)
    except InvalidInput as exc:
        raise InvalidInput(f"malformed inference request: {exc}") from exc
    return body


def _response_body(answer: bytes) -> InferenceBody:
    """A ModelInferResponse as the billing reads responses: outputs with their data, from
    `raw_output_contents` (one entry per output) or from the typed contents."""
    try:
        response = pb.ModelInferResponse.FromString(answer)
    except DecodeError as exc:
        raise InvalidInput(f"malformed ModelInferResponse: {exc}") from exc
    raw = list(response.raw_output_contents)
    if raw and len(raw) != len(response.outputs):
        raise InvalidInput(f"{len(raw)} raw output contents for {len(response.outputs)} outputs")
    outputs: list[dict[str, Any]] = []
    for i, tensor in enumerate(response.outputs):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if raw:
            entry["parameters"] = {"binary_data_size": len(raw[i])}
        elif tensor.datatype in _CONTENTS and tensor.HasField("contents"):
            entry["data"] = list(getattr(tensor.contents, _CONTENTS[tensor.datatype]))
        outputs.append(entry)
    header: dict[str, Any] = {"outputs": outputs}
    if response.model_version:
        header["model_version"] = response.model_version
    return InferenceBody(header, b"".join(raw))
