"""A flaky JSON-RPC proxy in front of anvil (loopback only), for fault-injection tests.

Each request is forwarded to the real node, then — with the configured probabilities — the
reply is replaced by a server error, delayed past the client's timeout, cut short, or (for an
`eth_getLogs` over more than `max_clean_range` blocks) turned into the "too many results" error
hosted providers give.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Faults:
    """Probabilities of each fault, per request."""

    server_error: float = 0.08
    rpc_error: float = 0.05
    slow: float = 0.04
    truncated: float = 0.08
    too_many_results: float = 0.5
    max_clean_range: int = 4
    slow_s: float = 1.0
    seed: int = 7
    counts: Counter[str] = field(default_factory=Counter)


class FlakyRpcProxy:
    """An HTTP server on 127.0.0.1 forwarding to `upstream` with injected faults."""

    def __init__(self, upstream: str, faults: Faults) -> None:
        self.upstream = upstream
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, reply = proxy.handle(body)
                if status is None:
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FlakyRpcProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _roll(self) -> float:
        with self._lock:
            return self._rng.random()

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults.counts[kind] += 1

    def handle(self, body: bytes) -> tuple[int | None, bytes]:
        f = self.faults
        request = json.loads(body)
        if isinstance(request, dict) and request.get("method") == "eth_getLogs":
            query = request["params"][0]
            blocks = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            if blocks > f.max_clean_range and self._roll() < f.too_many_results:
                self._count("too_many_results")
                error = {"code": -32005, "message": "query returned more than 10000 results"}
                reply = {"jsonrpc": "2.0", "id": request["id"], "error": error}
                return 200, json.dumps(reply).encode()
        roll = self._roll()
        if roll < f.server_error:
            self._count("server_error")
            return 502, b"bad gateway"
        roll -= f.server_error
        if roll < f.rpc_error and isinstance(request, dict):
            self._count("rpc_error")
            error = {"code": -32603, "message": "internal error"}
            return 200, json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}).encode()
        roll -= f.rpc_error
        forwarded = urllib.request.Request(  # noqa: S310 - loopback anvil
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(forwarded, timeout=30) as response:  # noqa: S310
            reply = response.read()
        if roll < f.slow:
            self._count("slow")
            time.sleep(f.slow_s)
            return 200, reply
        roll -= f.slow
        if roll < f.truncated and len(reply) > 2:
            self._count("truncated")
            return 200, reply[: len(reply) // 2]
        return 200, reply
