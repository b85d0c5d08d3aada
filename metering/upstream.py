"""A lean keep-alive HTTP/1.1 client for the one upstream the gateway talks to: Triton.

The gateway forwards every inference to the same host, with a body it already holds in memory
and a response it needs whole (to read the units tensor). A general client (aiohttp, httpx)
spends most of its time per request on what this path never uses: URL objects, cookie jars,
header multidicts, tracing hooks, redirects, streaming readers. Here a request is one
`transport.write` of pre-formatted bytes on a pooled connection, and the response is parsed by
llhttp (`httptools`, the parser uvicorn uses) straight into status, headers and body.

Rules:

- at most `limit` connections, reused LIFO (the warmest socket first); a connection idle for
  more than `keepalive_s`, one the server closed, or one whose exchange failed in any way is
  never reused;
- a request is never retried: an inference may have run even when its answer was lost;
- `UpstreamTimeoutError` when no complete answer came within the timeout, `UpstreamError` for
  everything else (refused, reset, malformed answer).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import cast

import httptools


class UpstreamError(Exception):
    """The upstream could not be reached or answered something that is not HTTP."""


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time."""


class UpstreamResponse:
    """A complete upstream answer: status, headers (lower-case names), body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._headers_done = False
        self._complete = False
        self._keep_alive = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection is no longer usable
            self._fail(UpstreamError("unexpected bytes from upstream between requests"))
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed upstream response: {exc}"))

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    # -- llhttp callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: out of step, never reuse
            self.closed = True

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        waiter = self._waiter
        if parser is None or waiter is None:
            return
        self._complete = True
        self._keep_alive = bool(parser.should_keep_alive())
        self._parser = None
        if not waiter.done():
            waiter.set_result(self._response(parser.get_status_code()))

    # -- the exchange --------------------------------------------------------------------

    def start(self, request: Iterable[bytes]) -> asyncio.Future[UpstreamResponse]:
        """Send one request; the future gets its whole answer."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._headers = {}
        self._chunks = []
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self.transport.writelines(request)
        return self._waiter

    @property
    def reusable(self) -> bool:
        """Whether the last exchange ended cleanly on a connection the server keeps open."""
        return self._complete and self._keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _response(self, status: int) -> UpstreamResponse:
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return UpstreamResponse(status, self._headers, body)

    def _fail(self, error: UpstreamError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser, waiter = self._parser, self._waiter
        if waiter is None or waiter.done() or parser is None:
            return
        # A response without Content-Length or chunking ends when the connection does.
        if (
            self._headers_done
            and "content-length" not in self._headers
            and "transfer-encoding" not in self._headers
        ):
            self._parser = None
            waiter.set_result(self._response(parser.get_status_code()))
            return
        reason = f": {exc}" if exc is not None else ""
        waiter.set_exception(UpstreamError(f"upstream closed the connection{reason}"))


class UpstreamPool:
    """Keep-alive connections to one `host:port` (use from one event loop)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        limit: int = 64,
        timeout_s: float = 60.0,
        keepalive_s: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self._host_header = f"Host: {host}:{port}\r\n".encode("latin-1")
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(limit)
        self._closed = False

    @classmethod
    def for_url(
        cls, url: str, *, limit: int = 64, timeout_s: float = 60.0, keepalive_s: float = 60.0
    ) -> UpstreamPool:
        """A pool for `http://host:port` (or `host:port`)."""
        hostport = url.removeprefix("http://").rstrip("/")
        if "/" in hostport or hostport.startswith("https:"):
            raise ValueError(f"upstream must be http://host:port, got {url!r}")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"upstream must be http://host:port, got {url!r}")
        return cls(
            host.strip("[]"), int(port), limit=limit, timeout_s=timeout_s, keepalive_s=keepalive_s
        )

    async def request(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> UpstreamResponse:
        """One exchange; raises `UpstreamTimeoutError` / `UpstreamError`."""
        head = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body or method not in ("GET", "HEAD"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        request = [b"".join(head), body] if len(body) > 65536 else [b"".join((*head, body))]
        async with self._slots:
            conn: _Connection | None = None
            try:
                async with asyncio.timeout(self.timeout_s):
                    conn = await self._acquire()
                    response = await conn.start(request)
            except TimeoutError as exc:
                if conn is not None:
                    conn.close()
                message = f"no answer from {self.host}:{self.port} in time"
                raise UpstreamTimeoutError(message) from exc
            except UpstreamError:
                if conn is not None:
                    conn.close()
                raise
            except OSError as exc:
                if conn is not None:
                    conn.close()
                raise UpstreamError(f"cannot reach {self.host}:{self.port}: {exc}") from exc
            except BaseException:  # cancelled mid-exchange: the connection is out of step
                if conn is not None:
                    conn.close()
                raise
            if conn.reusable and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return response

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
