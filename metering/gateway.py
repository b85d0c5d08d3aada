"""The metering gateway: a KServe v2 HTTP reverse proxy in front of an unmodified Triton.

For `POST /v2/models/{model}[/versions/{v}]/infer` it authenticates the caller (API key, or a
request signed by the license holder's wallet), checks the license covers the model, forwards
the body untouched to Triton, and, when Triton answers 200, counts the units of the model's
billing metric, makes one signed usage event durable (`DurableProducer`) and only then
answers the client with Triton's response. Triton's errors and status codes are passed
through unchanged and produce no event. A response whose units cannot be read is withheld
(502): nothing unbilled leaves the gateway.

Other routes:

- `/v2/health/live`, `/v2/health/ready`: proxied, no credentials (load balancers probe them);
- `/v2`, `/v2/models/{m}[/versions/{v}]`, `.../config`, `.../ready`: proxied for metered
  models; credentials required only when `auth_metadata` is set;
- `/metrics`: the gateway's Prometheus metrics;
- everything else (model repository control, statistics, trace, logging, shared memory,
  generate): 404. Those let a caller load models, read other tenants' traffic or bypass
  metering, so the gateway never exposes them.

A raw ASGI application rather than a framework router: this path runs for every inference and
each framework layer costs tens of microseconds of the latency budget. Forwarding uses a pool of
keep-alive HTTP/1.1 connections (`metering.upstream`: one write per request, llhttp parsing),
passing the bytes through instead of decoding and re-encoding tensors; only the JSON header of
a response is parsed, and only for models billed by an output tensor. Labelled metric children
are looked up once per label set, not per request.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metering.auth import ApiKeyStore, LicenseGrant, api_key_from_headers
from metering.billing import BillingTable, ModelBilling
from metering.durable import DurableProducer
from metering.errors import (
    AuthenticationFailed,
    BillingError,
    InvalidInput,
    MeteringError,
    PayloadTooLarge,
    Retryable,
    SpoolFull,
    UnitsUnreadable,
    UnknownModel,
    UsageNotRecorded,
)
from metering.events import Usage, UsageEventFactory
from metering.kserve import SHARED_MEMORY_REGION, InferenceBody
from metering.metrics import MeteringMetrics
from metering.upstream import UpstreamError, UpstreamPool, UpstreamTimeoutError
from metering.wallet_auth import WalletVerifier, is_wallet_signed

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Versions are integers in Triton; anything else would be pasted into the upstream URL.
_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([0-9]{1,18}))?/infer$")
_MODEL_META = re.compile(r"^/v2/models/([^/]+)(?:/versions/([0-9]{1,18}))?(/config|/ready)?$")
_HEALTH = frozenset({"/v2/health/live", "/v2/health/ready"})
# Request headers Triton needs; credentials never reach the model server.
FORWARD_REQUEST_HEADERS = ("content-type", "inference-header-content-length", "content-encoding")
FORWARD_RESPONSE_HEADERS = ("content-type", "inference-header-content-length")
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class GatewayConfig:
    """Tunables of the gateway (from `MeteringSettings`)."""

    triton_url: str
    max_body_bytes: int = 16 * 1024 * 1024
    auth_metadata: bool = False
    upstream_timeout_s: float = 60.0
    upstream_connections: int = 64


class Companion(Protocol):
    """A server that lives and dies with the gateway app (started at lifespan startup, in its
    event loop; stopped at shutdown, before the producer closes)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Reply(Exception):  # noqa: N818 - internal control flow, never escapes the app
    """Answer now with this status and message (raised from deep in the request path)."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def _error_status(exc: MeteringError) -> int:
    # The one mapping of domain errors to HTTP (InvalidInput 4xx, Retryable 503, bug 500).
    return int(getattr(exc, "status", 500))


class MeteringGateway:
    """The ASGI application. Build it with `metering.server.build_gateway` (or by hand in
    tests), run it under uvicorn; its lifespan opens and closes the upstream session."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        billing: BillingTable,
        api_keys: Callable[[], ApiKeyStore],
        events: UsageEventFactory,
        producer: DurableProducer,
        metrics: MeteringMetrics,
        wallet: WalletVerifier | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.billing = billing
        self.api_keys = api_keys
        self.events = events
        self.producer = producer
        self.metrics = metrics
        self.wallet = wallet
        self.on_shutdown = on_shutdown
        self.upstream = f"http://{config.triton_url.removeprefix('http://')}"
        self._pool: UpstreamPool | None = None
        self._in_flight = 0
        # Servers started and stopped with this app's lifespan (the gRPC side).
        self.companions: list[Companion] = []
        # Labelled metric children by label values: `labels()` validates and locks per call.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if method == "POST":
                match = _INFER.match(path)
                if match is not None:
                    await self._infer(scope, receive, send, match.group(1), match.group(2))
                    return
            elif method == "GET":
                if path == "/metrics":
                    body = generate_latest(self.metrics.registry)
                    await _respond(
                        send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())]
                    )
                    return
                if path in _HEALTH:
                    await self._proxy_get(send, path, "health")
                    return
                if path == "/v2" or _MODEL_META.match(path):
                    await self._metadata(scope, send, path)
                    return
            raise _Reply(404, f"{method} {path} is not available through the metering gateway")
        except _Reply as reply:
            self._child(self.metrics.requests, "other", str(reply.status)).inc()
            await _respond_error(send, reply.status, reply.message, reply.headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # No Accept-Encoding is sent: Triton answers uncompressed, so the units
                # tensor can be read without inflating a body.
                self._pool = UpstreamPool.for_url(
                    self.upstream,
                    limit=self.config.upstream_connections,
                    timeout_s=self.config.upstream_timeout_s,
                )
                for companion in self.companions:
                    await companion.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for companion in self.companions:
                    await companion.stop()
                if self._pool is not None:
                    await self._pool.close()
                if self.on_shutdown is not None:
                    await asyncio.to_thread(self.on_shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    @property
    def pool(self) -> UpstreamPool:
        """The upstream connections (opened at lifespan startup)."""
        if self._pool is None:
            raise RuntimeError("gateway used outside its lifespan (no upstream pool)")
        return self._pool

    # -- inference -----------------------------------------------------------------------

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, model: str, version: str | None
    ) -> None:
        started = time.perf_counter()
        route_status = 500
        self._in_flight += 1
        try:
            route_status = await self._metered_infer(scope, receive, send, model, version)
        except _Reply as reply:
            route_status = reply.status
            await _respond_error(send, reply.status, reply.message, reply.headers)
        except MeteringError as exc:
            route_status = _error_status(exc)
            if route_status in (401, 403):
                self._child(self.metrics.auth_failures, str(route_status)).inc()
            headers = [(b"retry-after", b"5")] if isinstance(exc, Retryable) else []
            if route_status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="royalty-metering"'))
            await _respond_error(send, route_status, str(exc), headers)
        finally:
            self._in_flight -= 1
            self._child(self.metrics.requests, "infer", str(route_status)).inc()
            if route_status == 200:
                self._child(self.metrics.latency, model).observe(time.perf_counter() - started)

    async def _metered_infer(
        self, scope: Scope, receive: Receive, send: Send, model: str, version: str | None
    ) -> int:
        headers = _headers(scope)
        grant: LicenseGrant | None = None
        api_key = api_key_from_headers(headers)
        if api_key is not None:
            # Keys are checked before the body is read: an anonymous client cannot make the
            # gateway buffer megabytes.
            grant = self.api_keys().authenticate(api_key)
        elif self.wallet is None or not is_wallet_signed(headers):
            raise AuthenticationFailed(
                "missing credentials: send `Authorization: Bearer <api key>` or `x-api-key`"
            )
        billing = self.billing.require(model)
        if grant is not None:
            grant.authorize(billing)
        _check_declared_length(headers, self.config.max_body_bytes)
        if not self.producer.has_room(self._in_flight):
            self.metrics.refused.inc()
            raise SpoolFull("usage spool full: inference refused until it drains")
        body = await _read_body(receive, self.config.max_body_bytes)
        if grant is None:
            assert self.wallet is not None
            grant = self.wallet.authenticate(headers, model, body)
            grant.authorize(billing)

        request = _parse_request(billing, headers, body, self.config.max_body_bytes)
        status, upstream_headers, payload, upstream_s = await self._forward(
            f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer",
            headers,
            body,
        )
        completed_at = datetime.now(UTC)
        self._child(self.metrics.upstream_latency, model).observe(upstream_s)
        out_headers = [
            (name.encode(), upstream_headers[name].encode())
            for name in FORWARD_RESPONSE_HEADERS
            if name in upstream_headers
        ]
        if status != 200:
            # Triton's own answer (unknown model, bad input, model error): passed through,
            # and no usage, because nothing was served.
            await _respond(send, status, payload, out_headers)
            return status
        self._child(self.metrics.inferences, model).inc()
        response = self.read_units_body(
            billing,
            lambda: InferenceBody.parse(
                payload, _int_header(upstream_headers, "inference-header-content-length")
            ),
        )
        units = self.units_of(billing, request, response)
        out_headers.append((b"x-royalty-units", str(units).encode()))
        usage_id = await self.record_usage(
            billing,
            grant,
            units,
            completed_at=completed_at,
            model_version=version or model_version_of(response),
            request_id=headers.get("x-request-id"),
            upstream_s=upstream_s,
        )
        if usage_id is not None:
            out_headers.append((b"x-royalty-usage-id", usage_id.encode()))
        await _respond(send, 200, payload, out_headers)
        return 200

    # -- metering a served inference (HTTP and gRPC) --------------------------------------

    def read_units_body(
        self, billing: ModelBilling, parse: Callable[[], InferenceBody]
    ) -> InferenceBody | None:
        """Triton's answer, parsed when the model is billed by an output tensor."""
        if not billing.reads_response:
            return None
        try:
            return parse()
        except InvalidInput as exc:
            raise self._unreadable(billing, exc) from exc

    def units_of(
        self, billing: ModelBilling, request: InferenceBody | None, response: InferenceBody | None
    ) -> int:
        """The units of a served inference; `UnitsUnreadable` (counted, logged) when Triton's
        answer does not say them."""
        try:
            return billing.units(request, response)
        except InvalidInput as exc:
            raise self._unreadable(billing, exc) from exc

    def _unreadable(self, billing: ModelBilling, exc: InvalidInput) -> UnitsUnreadable:
        self._child(self.metrics.billing_errors, billing.name).inc()
        log.error(
            "inference units unreadable; response withheld", model=billing.name, error=str(exc)
        )
        return UnitsUnreadable(f"usage of this inference could not be measured: {exc}")

    async def record_usage(
        self,
        billing: ModelBilling,
        grant: LicenseGrant,
        units: int,
        *,
        completed_at: datetime,
        model_version: str | None,
        request_id: str | None,
        upstream_s: float,
    ) -> str | None:
        """Make the usage event of one served inference durable, before it is answered; its
        id, or None when it is worth 0 units (nothing to bill). `UsageNotRecorded` when it
        could not be made durable: the response must then be withheld."""
        model = billing.name
        if units <= 0:
            self._child(self.metrics.zero_units, model).inc()
            return None
        encoded = self.events.encode(
            Usage(
                billing=billing,
                license_id=grant.license_id,
                units=units,
                completed_at=completed_at,
                model_version=model_version,
                request_id=request_id,
                latency_ms=int(upstream_s * 1000),
            )
        )
        handed = time.perf_counter()
        try:
            delivery = await self.producer.publish(encoded.key, encoded.value)
        except MeteringError as exc:
            log.error("usage event not durable; response withheld", id=encoded.id, error=str(exc))
            raise UsageNotRecorded(f"usage could not be recorded, retry later: {exc}") from exc
        self._child(self.metrics.durable_latency, delivery).observe(time.perf_counter() - handed)
        self._child(self.metrics.events, model, delivery).inc()
        # The correlation id from inference to payout: the stream and the settler log the
        # same usage_id (billed in which epoch, or rejected why).
        log.debug(
            "usage metered",
            usage_id=encoded.id,
            request_id=request_id,
            model=model,
            license_id=grant.license_id,
            units=units,
            delivery=delivery,
        )
        return encoded.id

    async def _forward(
        self, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes, float]:
        forward = [(name, headers[name]) for name in FORWARD_REQUEST_HEADERS if name in headers]
        started = time.perf_counter()
        try:
            resp = await self.pool.request("POST", path, forward, body)
        except UpstreamTimeoutError as exc:
            raise _Reply(504, "triton did not answer in time") from exc
        except UpstreamError as exc:
            raise _Reply(502, f"triton unreachable: {exc}") from exc
        return resp.status, resp.headers, resp.body, time.perf_counter() - started

    # -- metadata and health -------------------------------------------------------------

    async def _metadata(self, scope: Scope, send: Send, path: str) -> None:
        match = _MODEL_META.match(path)
        if match is not None:
            try:
                billing = self.billing.require(match.group(1))
            except UnknownModel as exc:
                raise _Reply(404, str(exc)) from exc
        else:
            billing = None
        try:
            self.check_metadata_access(_headers(scope), billing)
        except MeteringError as exc:
            raise _Reply(_error_status(exc), str(exc)) from exc
        await self._proxy_get(send, path, "metadata")

    def check_metadata_access(
        self, headers: Mapping[str, str], billing: ModelBilling | None
    ) -> None:
        """With `auth_metadata`, a metadata request needs a valid key (for `billing`'s model,
        when model-scoped); refusals are counted and raised (HTTP and gRPC)."""
        if not self.config.auth_metadata:
            return
        key = api_key_from_headers(headers)
        try:
            if key is None:
                raise AuthenticationFailed("missing credentials")
            grant = self.api_keys().authenticate(key)
            if billing is not None:
                grant.authorize(billing)
        except MeteringError as exc:
            self._child(self.metrics.auth_failures, str(_error_status(exc))).inc()
            raise

    async def _proxy_get(self, send: Send, path: str, route: str) -> None:
        try:
            resp = await self.pool.request("GET", path)
        except UpstreamError as exc:
            raise _Reply(502, f"triton unreachable: {exc}") from exc
        content_type = resp.headers.get("content-type")
        headers = [(b"content-type", content_type.encode())] if content_type is not None else []
        self._child(self.metrics.requests, route, str(resp.status)).inc()
        await _respond(send, resp.status, resp.body, headers)


# -- helpers -------------------------------------------------------------------------------


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be an integer") from exc


def model_version_of(response: InferenceBody | None) -> str | None:
    """The model version Triton's answer names, if any (HTTP and gRPC)."""
    version = response.header.get("model_version") if response is not None else None
    return version if isinstance(version, str) else None


def _check_declared_length(headers: Mapping[str, str], limit: int) -> None:
    declared = _int_header(headers, "content-length")
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Reply(499, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse_request(
    billing: ModelBilling, headers: Mapping[str, str], body: bytes, limit: int
) -> InferenceBody | None:
    """The parsed request when billing needs it, after checking its units will be readable
    and that it uses no shared memory."""
    header_length = _int_header(headers, "inference-header-content-length")
    encoding = headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        body = _inflate(body, encoding, limit)
    elif encoding not in ("", "identity"):
        if billing.reads_request:
            raise InvalidInput(f"unsupported Content-Encoding {encoding!r}")
        return None  # nothing Triton can read either: it refuses the request itself
    head = body if header_length is None else body[:header_length]
    # Cheap pre-checks on the bytes, so that most requests are not parsed at all: only a
    # header that mentions the parameter is checked for shared memory, and a `tokens` request
    # that names no outputs gets all of them, the units tensor included.
    shared_memory = SHARED_MEMORY_REGION.encode() in head
    billed = billing.reads_request and not (billing.metric == "tokens" and b'"outputs"' not in head)
    if not (shared_memory or billed):
        return None
    try:
        request = InferenceBody.parse(body, header_length)
        if shared_memory:
            request.check_no_shared_memory()
        if billed:
            billing.check_request(request)
    except BillingError:
        raise
    except InvalidInput as exc:
        raise InvalidInput(f"malformed inference request: {exc}") from exc
    return request if billed else None


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    # Bounded: a few kilobytes of gzip can inflate to gigabytes.
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding}: {exc}") from exc
    if len(out) > limit:
        raise PayloadTooLarge(f"request body inflates beyond the {limit}-byte limit")
    return out


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    # Triton's own error shape, so KServe clients show our errors like Triton's.
    body = json.dumps({"error": message}).encode()
    await _respond(send, status, body, [*_JSON, *(headers or [])])
