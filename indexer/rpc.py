"""JSON-RPC adapter of `ChainSource`: web3.py HTTP providers with failover, backoff and jitter.

Each call goes to the current endpoint; a transport failure, a server error or a garbled
reply moves to the next endpoint and sleeps (exponential backoff with full jitter, so several
indexers hammering a recovering node spread out). An `eth_getLogs` the node refuses as too
large — an error message such as "too many results" / "query returned more than" / "response
size exceeded", a timeout, or a reply cut short — raises `RangeRefusedError` at once, so the
follower retries with a smaller range instead of waiting on a query that will never pass.

The providers are used raw (`make_request`, no middleware, no result formatters): logs come
back as plain dicts, which is what makes backfills fast.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import structlog
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from indexer import metrics
from indexer.blocks import BlockHeader, RawLog
from indexer.errors import ChainMovedError, RangeRefusedError, RpcError, RpcUnavailableError

log = structlog.get_logger(__name__)

#: Phrases with which nodes and hosted providers refuse an eth_getLogs range as too large.
REFUSAL_MARKERS: tuple[str, ...] = (
    "too many results",
    "query returned more than",
    "response size exceeded",
    "response too large",
    "log response size",
    "limit exceeded",
    "block range",
    "range too large",
    "range is too large",
    "exceed maximum block range",
    "timeout",
    "timed out",
)

HEADER_BATCH = 100
"""Headers per batch request: large enough to amortise the round trip, small enough for any
node's batch limit."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one call before giving up with `RpcUnavailableError`."""

    attempts: int = 8
    base_delay_s: float = 0.05
    max_delay_s: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2**attempt))


class JsonRpcCallError(RpcError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, code: int | None, message: str) -> None:
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.message = message


def is_refusal(message: str) -> bool:
    """Whether a node's error message says the queried range is too large."""
    text = message.lower()
    return any(marker in text for marker in REFUSAL_MARKERS)


class JsonRpcEndpoint:
    """One JSON-RPC URL through a raw web3.py `HTTPProvider` (no retries of its own)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self._provider = HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )

    def call(self, method: str, params: Sequence[Any]) -> Any:
        """The call's `result`; raises `JsonRpcCallError` on an error object."""
        reply = self._provider.make_request(RPCEndpoint(method), list(params))
        return _result(method, reply)

    def batch(self, method: str, params: Sequence[Sequence[Any]]) -> list[Any]:
        """Results of one batch of calls to the same method, in request order."""
        replies = self._provider.make_batch_request(
            [(RPCEndpoint(method), list(p)) for p in params]
        )
        if not isinstance(replies, list):
            return [_result(method, replies)]  # an error for the whole batch
        if len(replies) != len(params):
            raise RpcUnavailableError(f"{method}: batch of {len(params)} got {len(replies)}")
        return [_result(method, reply) for reply in replies]


def _result(method: str, reply: Any) -> Any:
    if not isinstance(reply, dict):
        raise RpcUnavailableError(f"{method}: reply is not a JSON object")
    error = reply.get("error")
    if error is not None:
        if isinstance(error, dict):
            raise JsonRpcCallError(method, error.get("code"), str(error.get("message", "")))
        raise JsonRpcCallError(method, None, str(error))
    if "result" not in reply:
        raise RpcUnavailableError(f"{method}: reply has neither result nor error")
    return reply["result"]


class RpcChainSource:
    """`ChainSource` over several JSON-RPC URLs, tried in order with failover."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one RPC URL is needed")
        self._endpoints = [JsonRpcEndpoint(url, timeout_s) for url in urls]
        self._current = 0
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._chain_id: int | None = None

    @property
    def url(self) -> str:
        """The endpoint in use now."""
        return self._endpoints[self._current].url

    def _attempt(self, method: str, run: Callable[[JsonRpcEndpoint], Any], refusable: bool) -> Any:
        last: Exception | None = None
        for attempt in range(self._retry.attempts):
            endpoint = self._endpoints[self._current]
            started = time.perf_counter()
            try:
                result = run(endpoint)
                metrics.RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
                return result
            except JsonRpcCallError as exc:
                if refusable and is_refusal(exc.message):
                    metrics.RPC_ERRORS.labels(method, "range_refused").inc()
                    raise RangeRefusedError(str(exc)) from exc
                kind, last = "rpc_error", exc
            except requests.Timeout as exc:
                if refusable:
                    metrics.RPC_ERRORS.labels(method, "range_timeout").inc()
                    raise RangeRefusedError(f"{method} timed out: {exc}") from exc
                kind, last = "timeout", exc
            except json.JSONDecodeError as exc:
                # A reply cut short: a large eth_getLogs answer is the usual victim.
                if refusable:
                    metrics.RPC_ERRORS.labels(method, "truncated").inc()
                    raise RangeRefusedError(f"{method}: truncated reply") from exc
                kind, last = "truncated", exc
            except (requests.RequestException, OSError, RpcUnavailableError) as exc:
                kind, last = "unavailable", exc
            metrics.RPC_ERRORS.labels(method, kind).inc()
            self._fail_over(method, endpoint.url, kind, last)
            self._sleep(self._retry.delay(attempt, self._rng))
        raise RpcUnavailableError(
            f"{method}: no endpoint answered after {self._retry.attempts} attempts: {last}"
        )

    def _fail_over(self, method: str, url: str, kind: str, error: Exception | None) -> None:
        if len(self._endpoints) > 1:
            self._current = (self._current + 1) % len(self._endpoints)
            metrics.RPC_FAILOVERS.inc()
        log.warning("rpc call failed", method=method, url=url, kind=kind, error=str(error)[:200])

    def call(self, method: str, params: Sequence[Any], *, refusable: bool = False) -> Any:
        """One call with retries and failover."""
        return self._attempt(method, lambda e: e.call(method, params), refusable)

    def _batch(self, method: str, params: list[list[Any]]) -> list[Any]:
        """One batch call with retries and failover."""
        result: list[Any] = self._attempt(method, lambda e: e.batch(method, params), False)
        return result

    # --- ChainSource ---------------------------------------------------------------------------

    def chain_id(self) -> int:
        """The chain id (asked once)."""
        if self._chain_id is None:
            self._chain_id = int(self.call("eth_chainId", []), 16)
        return self._chain_id

    def head(self) -> int:
        """The latest block number."""
        return int(self.call("eth_blockNumber", []), 16)

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockHeader]:
        """Canonical headers by number, fetched in batches."""
        wanted = sorted(set(numbers))
        found: dict[int, BlockHeader] = {}
        for start in range(0, len(wanted), HEADER_BATCH):
            chunk = wanted[start : start + HEADER_BATCH]
            params = [[hex(n), False] for n in chunk]
            results = self._batch("eth_getBlockByNumber", params)
            for number, block in zip(chunk, results, strict=True):
                if block is None:
                    # The chain got shorter between our head query and now: a reorg.
                    raise ChainMovedError(f"block {number} is not on the chain any more")
                header = parse_header(block)
                if header.number != number:
                    raise RpcUnavailableError(f"asked for block {number}, got {header.number}")
                found[number] = header
        return found

    def logs(self, from_block: int, to_block: int, addresses: Sequence[str]) -> list[RawLog]:
        """Logs of `addresses` in the range; `RangeRefusedError` when the node refuses it."""
        query = {"fromBlock": hex(from_block), "toBlock": hex(to_block), "address": list(addresses)}
        raw = self.call("eth_getLogs", [query], refusable=True)
        if not isinstance(raw, list):
            raise RpcUnavailableError("eth_getLogs: result is not a list")
        try:
            return [parse_log(item) for item in raw]
        except (KeyError, TypeError, ValueError) as exc:
            raise RpcUnavailableError(f"eth_getLogs: malformed log: {exc}") from exc


def parse_header(block: dict[str, Any]) -> BlockHeader:
    """A `BlockHeader` from an `eth_getBlockByNumber` result."""
    try:
        return BlockHeader(
            number=int(block["number"], 16),
            hash=block["hash"].lower(),
            parent_hash=block["parentHash"].lower(),
            timestamp=int(block["timestamp"], 16),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RpcUnavailableError(f"malformed block header: {exc}") from exc


def parse_log(item: dict[str, Any]) -> RawLog:
    """A `RawLog` from one `eth_getLogs` entry (hex normalised to lower case)."""
    timestamp = item.get("blockTimestamp")
    return RawLog(
        address=item["address"].lower(),
        topics=tuple(topic.lower() for topic in item["topics"]),
        data=item["data"].lower(),
        block_number=int(item["blockNumber"], 16),
        block_hash=item["blockHash"].lower(),
        block_timestamp=int(timestamp, 16) if timestamp is not None else None,
        tx_hash=item["transactionHash"].lower(),
        log_index=int(item["logIndex"], 16),
        removed=bool(item.get("removed", False)),
    )
