"""A bare pass-through proxy in front of Triton: the metering benchmark's floor for one hop.

It runs the gateway's own HTTP stack (uvicorn with httptools and uvloop, a raw ASGI app,
`metering.upstream.UpstreamPool` to Triton, the same request and response headers passed
through) and nothing else: no credentials, no billing, no usage event, no durability, no
metrics. Against Triton direct, its throughput ratio and added latency are what the extra
network hop alone costs on the machine; the gateway's distance from it is what metering costs.

    .venv/bin/python bench/passthrough_proxy.py --port 8100 --upstream 127.0.0.1:8000

Not a product component: the benchmark starts it as its own process, like a gateway.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn

from metering.gateway import FORWARD_REQUEST_HEADERS, FORWARD_RESPONSE_HEADERS
from metering.upstream import UpstreamError, UpstreamPool

Message = MutableMapping[str, Any]


class PassThrough:
    """ASGI app forwarding every request to one upstream, bytes untouched."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.pool: UpstreamPool | None = None

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.pool = UpstreamPool.for_url(self.upstream)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if self.pool is not None:
                        await self.pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http" or self.pool is None:
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = [
            (text, value.decode("latin-1"))
            for name, value in scope["headers"]
            if (text := name.decode("latin-1")) in FORWARD_REQUEST_HEADERS
        ]
        try:
            resp = await self.pool.request(
                scope["method"], scope["path"], headers, b"".join(chunks)
            )
        except UpstreamError as exc:
            status, out, body = 502, [(b"content-type", b"text/plain")], str(exc).encode()
        else:
            status, body = resp.status, resp.body
            out = [
                (name.encode(), resp.headers[name].encode())
                for name in FORWARD_RESPONSE_HEADERS
                if name in resp.headers
            ]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


def start(upstream: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """This proxy as a process on `port` in front of `upstream` (Triton's HTTP host:port),
    returned once it forwards (Triton answers its readiness probe through it)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port), "--upstream", upstream],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"pass-through proxy did not start: {log.read_text()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="Triton's HTTP host:port")
    args = parser.parse_args()
    uvicorn.run(
        PassThrough(args.upstream),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
