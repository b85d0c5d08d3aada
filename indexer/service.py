"""Wiring: a `Follower` from the deployment manifest, RPC URLs, a database and a bus.

Kept apart from the command line so tests, benchmarks and the embedded engine build the
indexer the same way `royalty indexer run` does.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from indexer.decoding import LogDecoder
from indexer.errors import IndexerConfigError
from indexer.follower import Follower, FollowerConfig
from indexer.publisher import ChainPublisher
from indexer.rpc import RetryPolicy, RpcChainSource
from schemas import migrate
from settlement.chain.manifest import DeploymentManifest


def check_database(url: str) -> None:
    """Raise `IndexerConfigError` unless the database is at the migrations' head."""
    current, head = migrate.current(url), migrate.head()
    if current != head:
        raise IndexerConfigError(
            f"database is at revision {current}, the indexer needs {head}: run `royalty db upgrade`"
        )


def build_follower(
    manifest: DeploymentManifest,
    rpc_urls: Sequence[str],
    engine: Engine,
    *,
    confirmations: int = 2,
    max_block_range: int = 2000,
    poll_interval_s: float = 1.0,
    reorg_window: int = 64,
    rpc_timeout_s: float = 10.0,
    retry: RetryPolicy | None = None,
    publisher: ChainPublisher | None = None,
) -> Follower:
    """A follower of `manifest`'s contracts from its deploy block."""
    source = RpcChainSource(rpc_urls, timeout_s=rpc_timeout_s, retry=retry)
    chain_id = source.chain_id()
    if chain_id != manifest.chain_id:
        raise IndexerConfigError(
            f"the manifest is for chain {manifest.chain_id}, the RPC serves chain {chain_id}"
        )
    manifest.check_artifacts()
    config = FollowerConfig(
        start_block=manifest.deploy_block,
        confirmations=confirmations,
        max_block_range=max_block_range,
        poll_interval_s=poll_interval_s,
        reorg_window=reorg_window,
    )
    return Follower(source, LogDecoder.for_manifest(manifest), engine, config, publisher)
