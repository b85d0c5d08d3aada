"""Deduplication by usage id, decided inside the transaction that writes the effect.

The trap: recording an id as seen *before* its accrual commits turns a failed write plus a
retry into a lost event. Here nothing is recorded ahead: `BatchDedupe` asks the store which
ids were already decided (the committed `usage_events` rows) and remembers the ids decided
earlier in the same, not yet committed, batch. Both commit or roll back with the outputs;
the unique constraints on `usage_events.usage_id` and `accruals.usage_id` are the last line.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class DecidedIds(Protocol):
    """Where committed decisions are looked up (the accrual store)."""

    def decided(self, usage_ids: Collection[str]) -> set[str]:
        """The subset of `usage_ids` already decided (billed or rejected on chain state)."""
        ...


class BatchDedupe:
    """Seen-ids of one batch: committed ones (looked up once) plus those decided in it."""

    def __init__(self, store: DecidedIds, candidate_ids: Collection[str]) -> None:
        self._seen = store.decided(candidate_ids)

    def seen(self, usage_id: str) -> bool:
        """Whether `usage_id` was decided before, committed or earlier in this batch."""
        return usage_id in self._seen

    def mark(self, usage_id: str) -> None:
        """`usage_id` was decided in this batch (its outputs commit with the batch)."""
        self._seen.add(usage_id)
