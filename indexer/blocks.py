"""What the indexer reads from a chain: block headers and raw logs, and the port that gives them.

The follower depends on `ChainSource` only; `indexer.rpc.RpcChainSource` implements it over
JSON-RPC, and tests may implement it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The parts of a block header the indexer needs: identity, parent link, time."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class RawLog:
    """One log as the node returned it (hex strings normalised to lower case).

    `block_timestamp` is None when the node does not put it in logs (an older node); the
    follower then takes it from the block's header.
    """

    address: str
    topics: tuple[str, ...]
    data: str
    block_number: int
    block_hash: str
    block_timestamp: int | None
    tx_hash: str
    log_index: int
    removed: bool = False


class ChainSource(Protocol):
    """Read access to one chain (the follower's only view of it)."""

    def chain_id(self) -> int:
        """The chain id."""
        ...

    def head(self) -> int:
        """The latest block number."""
        ...

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockHeader]:
        """The canonical headers of `numbers` (all of them, or raise)."""
        ...

    def logs(self, from_block: int, to_block: int, addresses: Sequence[str]) -> list[RawLog]:
        """Every log of `addresses` in `[from_block, to_block]`, in chain order.

        Raises `RangeRefusedError` when the node refuses the range as too large.
        """
        ...
