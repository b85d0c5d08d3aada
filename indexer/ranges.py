"""How many blocks to ask `eth_getLogs` for next: grow while the node answers, halve on refusal.

Pure: the follower tells it what happened, it answers with the next size. Growth is
multiplicative (x2) up to the configured maximum, so a sparse backfill quickly reaches large
ranges; a refusal halves it (down to one block), so a dense stretch is walked in small steps
and the size recovers after it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveRange:
    """The current `eth_getLogs` block-range size."""

    maximum: int
    size: int = 0
    minimum: int = 1

    def __post_init__(self) -> None:
        if self.maximum < self.minimum:
            raise ValueError("maximum must be at least the minimum")
        if self.size <= 0:
            self.size = self.maximum
        self.size = max(self.minimum, min(self.size, self.maximum))

    def end(self, start: int, limit: int) -> int:
        """The last block of the next range from `start`, not beyond `limit`."""
        return min(start + self.size - 1, limit)

    def succeeded(self, blocks: int) -> None:
        """A range of `blocks` blocks was answered: grow (only if the range was full-size)."""
        if blocks >= self.size:
            self.size = min(self.maximum, self.size * 2)

    def refused(self, blocks: int) -> bool:
        """A range of `blocks` blocks was refused: shrink below it. False when it cannot
        shrink any more (a single block refused: the caller must retry or give up)."""
        if blocks <= self.minimum:
            self.size = self.minimum
            return False
        self.size = max(self.minimum, min(self.size, blocks) // 2)
        return True
