"""The base class of every published record: frozen, closed, fully typed."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A frozen pydantic model that rejects unknown fields.

    Frozen because an event is a fact: code that needs a different one builds a new one
    (`model_copy(update=...)`). Closed (`extra="forbid"`) because a field we do not know is
    either a producer bug or a newer schema version, and both must be noticed, not dropped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


_M = TypeVar("_M", bound=BaseModel)
_set_attribute = object.__setattr__


def construct_unvalidated(model: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """An instance of `model` holding `values` (every field, under its own name), unvalidated.

    What `model_construct` does, without its per-field default and alias handling. For the
    fast paths that have already checked every value against the model's rules themselves and
    fall back to validation for anything else.
    """
    instance = model.__new__(model)
    _set_attribute(instance, "__dict__", values)
    _set_attribute(instance, "__pydantic_fields_set__", fields_set)
    _set_attribute(instance, "__pydantic_extra__", None)
    _set_attribute(instance, "__pydantic_private__", None)
    return instance
