"""Epochs: fixed windows of usage, their lifecycle, and the allocations they pay out.

Lifecycle: `open → closing → computed → committed → claimable | disputed`. The allowed moves are
data (`TRANSITIONS`), checked by the pure `check_transition`; the settler makes each move
idempotent by checking the current status (and the chain) before it acts, never by relaxing
the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import Field, Strict, model_validator

from schemas.base import Record
from schemas.errors import InvalidTransition
from schemas.evm import Address, Bytes32
from schemas.money import Uint64, Uint256

CARRY_SCALE = 10**6
"""Sub-units per base unit: fees and splits are in 10^-6 base units."""


class EpochStatus(StrEnum):
    """Where an epoch is in its lifecycle."""

    OPEN = "open"
    """Accepting usage."""
    CLOSING = "closing"
    """Both watermarks passed its end; its distribution is being computed."""
    COMPUTED = "computed"
    """Distribution, Merkle root and totals are stored; not yet on-chain."""
    COMMITTED = "committed"
    """Root and funds are on-chain; the dispute window runs."""
    CLAIMABLE = "claimable"
    """The dispute window passed undisputed; recipients may claim. Final."""
    DISPUTED = "disputed"
    """A guardian disputed it within the window; its funds were refunded. Final."""


TRANSITIONS: Mapping[EpochStatus, frozenset[EpochStatus]] = MappingProxyType(
    {
        EpochStatus.OPEN: frozenset({EpochStatus.CLOSING}),
        EpochStatus.CLOSING: frozenset({EpochStatus.COMPUTED}),
        EpochStatus.COMPUTED: frozenset({EpochStatus.COMMITTED}),
        EpochStatus.COMMITTED: frozenset({EpochStatus.CLAIMABLE, EpochStatus.DISPUTED}),
        EpochStatus.CLAIMABLE: frozenset(),
        EpochStatus.DISPUTED: frozenset(),
    }
)
"""The statuses each status may move to, and no others."""

_ORDER = list(EpochStatus)
_COMPUTED_FIELDS = ("root", "total", "inputs_hash", "usage_root")
_COMMITTED_FIELDS = ("tx_hash", "block_number", "claimable_at")


def check_transition(current: EpochStatus | str, target: EpochStatus | str) -> None:
    """Raise `InvalidTransition` unless `current → target` is a step of the lifecycle."""
    source, destination = EpochStatus(current), EpochStatus(target)
    allowed = TRANSITIONS[source]
    if destination not in allowed:
        raise InvalidTransition(
            source.value, destination.value, sorted(status.value for status in allowed)
        )


def _reached(status: EpochStatus, milestone: EpochStatus) -> bool:
    return _ORDER.index(status) >= _ORDER.index(milestone)


class Epoch(Record):
    """One epoch: the window `[start_time, end_time)` in unix seconds, its status and outputs.

    From `computed` on it carries the distribution's Merkle `root`, its `total` (base units),
    the `inputs_hash` and `usage_root` that let anyone recompute it; from `committed` on, the
    commit transaction (`tx_hash`, `block_number`) and `claimable_at` (unix seconds) — except
    an epoch with nothing to pay (`total` 0), committed without a transaction.
    """

    id: Uint64
    start_time: Uint64
    end_time: Uint64
    status: EpochStatus
    root: Bytes32 | None = None
    total: Uint256 | None = None
    inputs_hash: Bytes32 | None = None
    usage_root: Bytes32 | None = None
    tx_hash: Bytes32 | None = None
    block_number: Uint64 | None = None
    claimable_at: Uint64 | None = None

    @model_validator(mode="after")
    def _complete_for_status(self) -> Epoch:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        required: tuple[str, ...] = ()
        if _reached(self.status, EpochStatus.COMPUTED):
            required += _COMPUTED_FIELDS
        if _reached(self.status, EpochStatus.COMMITTED):
            # An epoch with nothing to pay (total 0) is committed without a transaction: the
            # contract takes no empty root. It still records when it became claimable.
            required += _COMMITTED_FIELDS if self.total != 0 else ("claimable_at",)
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.status.value} epoch needs {', '.join(missing)}")
        return self

    def contains(self, unix_time: int) -> bool:
        """Whether an event at `unix_time` falls in this epoch's window."""
        return self.start_time <= unix_time < self.end_time

    def transition_to(self, target: EpochStatus, **updates: Any) -> Epoch:
        """This epoch moved to `target` with `updates` applied, checked and validated."""
        check_transition(self.status, target)
        return Epoch.model_validate({**self.model_dump(), **updates, "status": target})


class Allocation(Record):
    """One leaf of an epoch's distribution: `amount` base units to `account` at leaf `index`.

    The Merkle leaf is `(index, account, amount)`, OpenZeppelin StandardMerkleTree encoded.
    """

    epoch: Uint64
    index: Uint64
    account: Address
    amount: Uint256


class RecipientCarry(Record):
    """What a recipient is owed below one base unit after `epoch`, in 10^-6 units.

    A recipient's epoch amount is the floor of its summed 10^-6 units; this remainder is added
    to its next epoch, so nothing is lost and nothing is created.
    """

    account: Address
    epoch: Uint64
    carry_e6: Annotated[int, Strict(), Field(ge=0, lt=CARRY_SCALE)]
