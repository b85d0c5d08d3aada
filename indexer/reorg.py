"""Reorg detection and walk-back, pure: block hashes in, decisions out.

The follower keeps the hash of every block it indexed near the tip (and of the last block of
every backfill range). A new block whose parent hash is not the stored hash of the block
before it means the chain reorganised; the common ancestor is then the highest stored block
whose hash the canonical chain still has at that height, and everything above it is rolled
back. Walking down the stored hashes (not only the unfinalized ones) makes a reorg deeper than
the confirmation depth — which should never happen, and is logged loudly when it does — still
end in a correct state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from indexer.blocks import BlockHeader, RawLog


@dataclass(frozen=True)
class BlockRef:
    """A block by height and hash."""

    number: int
    hash: str


def common_ancestor(stored: Mapping[int, str], canonical: Mapping[int, str]) -> BlockRef | None:
    """The highest stored block that is still canonical, or None (nothing stored survives).

    `stored`: hash by height as indexed; `canonical`: hash by height on the chain now, for
    (at least) the stored heights.
    """
    for number in sorted(stored, reverse=True):
        if canonical.get(number) == stored[number]:
            return BlockRef(number, stored[number])
    return None


def first_broken_link(previous: BlockRef | None, headers: Sequence[BlockHeader]) -> int | None:
    """The height of the first header that does not extend the chain before it, or None.

    `headers` are consecutive heights in order; `previous` is the block just below the first
    one (None when not known, e.g. at the deploy block).
    """
    before = previous
    for header in headers:
        adjacent = before is not None and header.number == before.number + 1
        if adjacent and before is not None and header.parent_hash != before.hash:
            return header.number
        before = BlockRef(header.number, header.hash)
    return None


def inconsistent_logs(logs: Iterable[RawLog], headers: Mapping[int, BlockHeader]) -> list[int]:
    """Heights where a log's block hash differs from the header fetched for that height.

    Non-empty means the chain moved between fetching the logs and the headers: fetch again.
    A log marked `removed` is the node telling us the same thing.
    """
    bad: set[int] = set()
    for log in logs:
        header = headers.get(log.block_number)
        if log.removed or (header is not None and header.hash != log.block_hash):
            bad.add(log.block_number)
    return sorted(bad)
