"""Errors of the indexer, by whose fault they are.

- `IndexerConfigError`: invalid input (a manifest for another chain, a bad setting): the
  operator's to fix; retrying cannot help.
- `IndexerInvariantError`: our bug or a broken assumption (stored state that contradicts
  itself): stop, loudly, rather than index something wrong.
- `IndexerLeaseHeldError` / `IndexerLeaseLostError`: another indexer runs (or took over) the
  same chain in the same database: stop one of them; retrying in a loop cannot help.
- `RpcError` and its subclasses: the world's fault (a node down, slow, or refusing a query):
  retried with backoff, on the next endpoint, or with a smaller block range.
"""

from __future__ import annotations


class IndexerError(Exception):
    """Base of every indexer error."""


class IndexerConfigError(IndexerError):
    """The indexer was given something it cannot work with (caller's fault)."""


class IndexerInvariantError(IndexerError):
    """Stored or fetched state violates an invariant the indexer relies on (a bug)."""


class IndexerLeaseHeldError(IndexerError):
    """Another follower holds the lease of this chain in this database (see `indexer.lease`)."""


class IndexerLeaseLostError(IndexerError):
    """This follower's lease was taken over by another one; it must stop (nothing it did in
    the failed transaction was committed)."""


class RpcError(IndexerError):
    """A JSON-RPC call failed; retryable."""


class RpcUnavailableError(RpcError):
    """No endpoint answered (connection refused, timeouts, server errors, garbled replies)."""


class RangeRefusedError(RpcError):
    """The node refused an `eth_getLogs` range as too large (too many results, response too
    big, or it timed out): retry the same start with a smaller range."""


class ChainMovedError(RpcError):
    """What was fetched is not one consistent chain (a reorg happened between two calls):
    fetch again."""


class PublishError(IndexerError):
    """The bus did not acknowledge a message; retryable (the outbox keeps it)."""
