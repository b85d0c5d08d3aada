"""The indexer's position: the last block it indexed and the finalized watermark it published.

Stored in `checkpoints` under `indexer:<chain id>`, in the same transaction as the rows of the
blocks it accounts for, so after any crash the indexer resumes exactly after its committed
outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.chain import FinalizedWatermark


def component_name(chain_id: int) -> str:
    """The checkpoint key of the indexer of `chain_id`."""
    return f"indexer:{chain_id}"


@dataclass(frozen=True)
class Checkpoint:
    """Last indexed block (hash None before the first one) and the finalized watermark."""

    block_number: int
    block_hash: str | None
    finalized: FinalizedWatermark | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document stored in the checkpoint row."""
        return {
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "finalized": None if self.finalized is None else self.finalized.model_dump(mode="json"),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Checkpoint:
        """Inverse of `to_json`."""
        finalized = document.get("finalized")
        return cls(
            block_number=int(document["block_number"]),
            block_hash=document.get("block_hash"),
            finalized=None if finalized is None else FinalizedWatermark.model_validate(finalized),
        )
