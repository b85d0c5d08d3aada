"""Checkpoints: where each component has got to, committed with its outputs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables.types import Base, JsonDocument, UtcDateTime


class CheckpointRow(Base):
    """A component's position (block, Kafka offsets, epoch...) as a JSON document.

    Written in the same transaction as the outputs it accounts for, so after a crash a
    component resumes exactly where its committed outputs end: never twice, never skipped.
    """

    __tablename__ = "checkpoints"

    component: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
