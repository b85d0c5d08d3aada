"""Errors raised by the schemas package.

Two families, as in the rest of the code base: the input is wrong (`MalformedEvent`, the
producer's fault: reject it to the dead-letter table, never retry it), or our own code broke a
rule it promises (`InvalidTransition`, `SchemaDriftError`: a bug, stop and alert). Nothing here
is retryable; the schemas package does no I/O except the migration helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

# A hostile event can carry thousands of errors; a dead letter needs only the first few.
_MAX_REPORTED_ERRORS = 5


class SchemaError(Exception):
    """Base class of every error raised by the schemas package."""


class MalformedEvent(SchemaError, ValueError):  # noqa: N818 - name fixed by the design
    """An event (usage, chain, or any published record) failed to parse or validate.

    `reason` is one human-readable line naming the offending field and the rule it broke, e.g.
    ``data.units: must be greater than 0``; it goes verbatim into the dead letter's `detail`.
    Subclasses `ValueError` so that generic validation code treats it as bad input.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> MalformedEvent:
        """Summarise a pydantic `ValidationError` into one line: `loc: message; loc: message`."""
        errors = exc.errors(include_url=False, include_input=False)
        parts = [
            f"{_location(err['loc'])}: {_message(err['msg'])}"
            for err in errors[:_MAX_REPORTED_ERRORS]
        ]
        if len(errors) > _MAX_REPORTED_ERRORS:
            parts.append(f"and {len(errors) - _MAX_REPORTED_ERRORS} more errors")
        return cls("; ".join(parts) or "invalid event")


class InvalidTransition(SchemaError):  # noqa: N818 - reads as the noun it is
    """An epoch was asked to move between two statuses that the lifecycle does not connect.

    The lifecycle is `open → closing → computed → committed → claimable | disputed`; every
    other move (backwards, skipping a step, leaving a final status) is a bug in the caller.
    """

    def __init__(self, current: str, target: str, allowed: Sequence[str]) -> None:
        options = ", ".join(allowed) if allowed else "none (final status)"
        super().__init__(
            f"epoch status cannot go from {current!r} to {target!r}; allowed from "
            f"{current!r}: {options}"
        )
        self.current = current
        self.target = target
        self.allowed = tuple(allowed)


class SchemaDriftError(SchemaError):
    """The database schema does not match the SQLAlchemy models.

    Either the database is not at the latest migration, or a model changed without a migration
    (or a migration without its model). `differences` lists what Alembic's comparison found.
    """

    def __init__(self, message: str, differences: Sequence[str] = ()) -> None:
        detail = "".join(f"\n  - {d}" for d in differences)
        super().__init__(message + detail)
        self.differences = tuple(differences)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "event"


def _message(msg: str) -> str:
    # pydantic prefixes messages of our own validators; the prefix says nothing to a reader.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg
