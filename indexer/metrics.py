"""Prometheus metrics of the indexer, on a registry of its own.

A registry of its own (not the global default) so tests that build several followers in one
process do not collide, and `serve(port)` exposes exactly the indexer's series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

BLOCKS = Counter(
    "royalty_indexer_blocks_total",
    "Blocks indexed (committed with their events).",
    registry=REGISTRY,
)
EVENTS = Counter(
    "royalty_indexer_events_total", "Chain events committed, by kind.", ["kind"], registry=REGISTRY
)
RAW_LOGS = Counter(
    "royalty_indexer_raw_logs_total",
    "Logs of indexed contracts kept undecoded, by reason.",
    ["reason"],
    registry=REGISTRY,
)
REORGS = Counter("royalty_indexer_reorgs_total", "Reorgs rolled back.", registry=REGISTRY)
REORG_DEPTH = Histogram(
    "royalty_indexer_reorg_depth_blocks",
    "Blocks rolled back per reorg.",
    buckets=(1, 2, 3, 5, 8, 13, 21, 64, 256),
    registry=REGISTRY,
)
RETRACTIONS = Counter(
    "royalty_indexer_retractions_total", "Events retracted by reorgs.", registry=REGISTRY
)
HEAD = Gauge("royalty_indexer_chain_head_block", "Latest block of the chain.", registry=REGISTRY)
INDEXED = Gauge("royalty_indexer_indexed_block", "Last block indexed.", registry=REGISTRY)
LAG = Gauge(
    "royalty_indexer_lag_blocks", "Chain head minus the last indexed block.", registry=REGISTRY
)
FINALIZED = Gauge(
    "royalty_indexer_finalized_block", "Block number of the finalized watermark.", registry=REGISTRY
)
FINALIZED_TIME = Gauge(
    "royalty_indexer_finalized_timestamp_seconds",
    "Block timestamp of the finalized watermark.",
    registry=REGISTRY,
)
RANGE_SIZE = Gauge(
    "royalty_indexer_getlogs_range_blocks", "Current eth_getLogs block range.", registry=REGISTRY
)
RPC_SECONDS = Histogram(
    "royalty_indexer_rpc_seconds", "JSON-RPC call latency by method.", ["method"], registry=REGISTRY
)
RPC_ERRORS = Counter(
    "royalty_indexer_rpc_errors_total",
    "Failed JSON-RPC calls by method and kind.",
    ["method", "kind"],
    registry=REGISTRY,
)
RPC_FAILOVERS = Counter(
    "royalty_indexer_rpc_failovers_total", "Switches to the next RPC endpoint.", registry=REGISTRY
)
PUBLISHED = Counter(
    "royalty_indexer_published_total",
    "Messages published to the chain topic, by type.",
    ["type"],
    registry=REGISTRY,
)
OUTBOX = Gauge(
    "royalty_indexer_outbox_messages", "Messages waiting in the outbox.", registry=REGISTRY
)


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Expose the metrics over HTTP on `addr:port` (a daemon thread)."""
    start_http_server(port, addr=addr, registry=REGISTRY)
