"""The gateway's hot-path shortcuts give the same results as the general code they replace:
the direct event encoder (vs the pydantic model), the upstream pool (vs a real HTTP server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from metering.billing import ModelBilling
from metering.events import EventIds, Usage, UsageEventFactory
from metering.signing import KeyRing, Signer, SigningKey
from metering.upstream import UpstreamError, UpstreamPool, UpstreamTimeoutError
from schemas.usage import encode_usage_event, kafka_key, parse_usage_event

_KEY = SigningKey.generate(prefix="fast")
_RING = KeyRing([_KEY.verification_key()])
_TEXT = st.one_of(st.none(), st.text(max_size=300))


@settings(max_examples=300, deadline=None)
@given(
    model_id=st.integers(0, 2**256 - 1),
    license_id=st.integers(0, 2**256 - 1),
    units=st.integers(1, 2**64 - 1),
    latency=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    version=_TEXT,
    request_id=_TEXT,
    name=st.text(min_size=1, max_size=300),
    metric=st.sampled_from(["requests", "batch_items", "tokens"]),
    micros=st.integers(0, 4_000_000_000_000_000),
)
def test_direct_encoding_is_byte_identical_to_the_model(
    model_id: int,
    license_id: int,
    units: int,
    latency: int | None,
    version: str | None,
    request_id: str | None,
    name: str,
    metric: str,
    micros: int,
) -> None:
    billing = ModelBilling(name, model_id, metric, "tokens")  # type: ignore[arg-type]
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    usage = Usage(billing, license_id, units, when, version, request_id, latency)
    fast = UsageEventFactory("node-1", Signer(_KEY), EventIds("node-1", "b00t"))
    slow = UsageEventFactory("node-1", Signer(_KEY), EventIds("node-1", "b00t"))
    encoded = fast.encode(usage)
    event = slow.build(usage)
    assert encoded.value == encode_usage_event(event)
    assert encoded.key == kafka_key(event)
    assert encoded.id == event.id
    _RING.verify(parse_usage_event(encoded.value))


def test_direct_encoding_falls_back_to_the_model_for_what_it_refuses() -> None:
    factory = UsageEventFactory("node-1", Signer(_KEY))
    billing = ModelBilling("m", 1, "requests")
    other_zone = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    for usage in (
        Usage(billing, 1, 0, datetime.now(UTC)),  # units must be positive
        Usage(billing, -1, 1, datetime.now(UTC)),
        Usage(billing, 1, 2**64, datetime.now(UTC)),
        Usage(billing, 1, 1, other_zone),  # the model refuses non-UTC times
        Usage(billing, 1, 1, datetime(1969, 12, 31, tzinfo=UTC)),
    ):
        with pytest.raises(ValidationError):
            factory.encode(usage)
    # A node id that makes invalid ids is refused by the model, not silently encoded.
    with pytest.raises(ValidationError):
        UsageEventFactory("bad node", Signer(_KEY)).encode(Usage(billing, 1, 1, datetime.now(UTC)))


# -- the upstream pool ---------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Runner = Callable[[Awaitable[None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Each pool test on both event loops (the gateway runs on uvloop)."""
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[return-value]


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0].encode(), headers, body


def test_pool_reuses_connections_and_passes_bytes_through(run: Runner) -> None:
    connections = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                line, headers, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            payload = line + b"|" + headers.get("x-h", "").encode() + b"|" + body
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: text/x\r\nX-A: 1\r\nX-A: 2\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await writer.drain()
        writer.close()

    async def main() -> None:
        async with _server(echo) as port:
            pool = UpstreamPool("127.0.0.1", port, limit=4, timeout_s=5)
            big = bytes(range(256)) * 1000
            for body in (b"hello", b"", big):
                resp = await pool.request("POST", "/v2/x", [("x-h", "v")], body)
                assert resp.status == 201
                assert resp.headers["content-type"] == "text/x"
                assert resp.headers["x-a"] == "1, 2"
                assert resp.body == b"POST /v2/x HTTP/1.1|v|" + body
            results = await asyncio.gather(
                *(pool.request("POST", "/p", body=str(i).encode()) for i in range(20))
            )
            assert [r.body.rsplit(b"|", 1)[1] for r in results] == [
                str(i).encode() for i in range(20)
            ]
            resp = await pool.request("GET", "/v2/health/ready")
            assert resp.body == b"GET /v2/health/ready HTTP/1.1||"
            await pool.close()
        assert connections <= 4

    run(main())


def test_pool_handles_chunked_and_close_delimited_answers(run: Runner) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        await _read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        writer.close()

    async def main() -> None:
        async with _server(chunked) as port:
            pool = UpstreamPool("127.0.0.1", port, timeout_s=5)
            assert (await pool.request("POST", "/a", body=b"x")).body == b"abcde"
            assert (await pool.request("POST", "/b", body=b"x")).body == b"until close"
            await pool.close()

    run(main())


def test_pool_errors_and_timeouts(run: Runner) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with _server(hang) as port:
            with pytest.raises(UpstreamTimeoutError):
                await UpstreamPool("127.0.0.1", port, timeout_s=0.2).request("POST", "/", body=b"")
        async with _server(cut) as port:
            with pytest.raises(UpstreamError):
                await UpstreamPool("127.0.0.1", port, timeout_s=5).request("POST", "/", body=b"")
        async with _server(garbage) as port:
            with pytest.raises(UpstreamError):
                await UpstreamPool("127.0.0.1", port, timeout_s=5).request("POST", "/", body=b"")
        async with _server(garbage) as port:
            pass  # closed: nothing listens on the port any more
        with pytest.raises(UpstreamError):
            await UpstreamPool("127.0.0.1", port, timeout_s=5).request("GET", "/")

    run(main())


def test_pool_parses_its_url() -> None:
    pool = UpstreamPool.for_url("http://127.0.0.1:8000")
    assert (pool.host, pool.port) == ("127.0.0.1", 8000)
    assert UpstreamPool.for_url("triton:9000/").port == 9000
    for bad in ("https://x:1", "http://x", "http://x:1/path"):
        with pytest.raises(ValueError, match="http://host:port"):
            UpstreamPool.for_url(bad)
