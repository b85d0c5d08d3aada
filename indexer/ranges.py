"""How many blocks to ask `eth_getLogs` for next: grow while the node answers, halve on refusal.

Pure: the follower tells it what happened, it answers with the next size. Growth is
multiplicative (x2) up to the configured maximum, so a sparse backfill quickly reaches large
ranges; a refusal halves it (down to one block), so a dense stretch is walked in small steps
and the size recovers after it.

With `target_logs`, the size also follows the density of the logs: a range that returned more
logs than the target shrinks the next one to what would have held about the target, and growth
stops there. A dense backfill then commits in ranges of about `target_logs` events (bounded
memory and transactions, and ranges small enough for the follower to fetch the next one while
it writes this one); a sparse one still reaches the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveRange:
    """The current `eth_getLogs` block-range size."""

    maximum: int
    size: int = 0
    minimum: int = 1
    target_logs: int | None = None

    def __post_init__(self) -> None:
        if self.maximum < self.minimum:
            raise ValueError("maximum must be at least the minimum")
        if self.size <= 0:
            self.size = self.maximum
        self.size = max(self.minimum, min(self.size, self.maximum))

    def end(self, start: int, limit: int) -> int:
        """The last block of the next range from `start`, not beyond `limit`."""
        return min(start + self.size - 1, limit)

    def succeeded(self, blocks: int, logs: int | None = None) -> None:
        """A range of `blocks` blocks was answered (with `logs` logs, if known): grow (only if
        the range was full-size), or with a log target, fit the size to the logs' density."""
        if self.target_logs is not None and logs is not None and blocks > 0:
            fit = max(self.minimum, blocks * self.target_logs // max(logs, 1))
            if logs > self.target_logs:
                self.size = min(self.size, fit)
            elif blocks >= self.size:
                self.size = min(self.maximum, self.size * 2, max(fit, self.size))
            return
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
