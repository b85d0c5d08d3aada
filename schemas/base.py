"""The base class of every published record: frozen, closed, fully typed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A frozen pydantic model that rejects unknown fields.

    Frozen because an event is a fact: code that needs a different one builds a new one
    (`model_copy(update=...)`). Closed (`extra="forbid"`) because a field we do not know is
    either a producer bug or a newer schema version, and both must be noticed, not dropped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
