"""Epoch arithmetic of the join: which fixed-length window an event time falls in. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EpochClock:
    """Fixed-length epochs: epoch n is `[genesis_s + n * length_s, genesis_s + (n+1) * length_s)`.

    Built from `royalty.config.EpochSettings` (`EpochClock(s.length_s, s.genesis_s)`).
    """

    length_s: int
    genesis_s: int = 0

    def __post_init__(self) -> None:
        if self.length_s <= 0:
            raise ValueError("epoch length must be positive")
        if self.genesis_s < 0:
            raise ValueError("epoch genesis must be unix seconds (>= 0)")

    def epoch_of(self, unix_time: int) -> int:
        """The epoch containing `unix_time`.

        Times before genesis belong to epoch 0: such an event can only be late, and a late event
        is billed in the earliest epoch still open, never dropped.
        """
        return max(0, (unix_time - self.genesis_s) // self.length_s)

    def start_of(self, epoch: int) -> int:
        """The first second of `epoch`."""
        return self.genesis_s + epoch * self.length_s

    def end_of(self, epoch: int) -> int:
        """The first second after `epoch`."""
        return self.start_of(epoch + 1)
