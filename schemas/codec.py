"""Canonical JSON bytes for everything the engine publishes, and the defensive decoder.

Encoding is canonical (sorted keys, no whitespace, UTF-8, `None` fields omitted), so the same
record always has the same bytes: producers, signers and verifiers agree without negotiating,
and a message hash identifies its content. Decoding is defensive because the `usage` topic is
fed by metering nodes we do not run: size-capped, strict UTF-8, duplicate keys and `NaN`
rejected, every failure reported as a `MalformedEvent` with a reason fit for a dead letter.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import MalformedEvent

MAX_EVENT_BYTES = 64 * 1024
"""Largest encoded message accepted; a usage event is a few hundred bytes."""

ModelT = TypeVar("ModelT", bound=BaseModel)


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of a JSON value: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode(event: BaseModel) -> bytes:
    """The canonical JSON bytes of a record (`None` fields omitted)."""
    return canonical_json(event.model_dump(mode="json", exclude_none=True))


def decode(model: type[ModelT], raw: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES) -> ModelT:
    """Parse and validate one JSON document as `model`; raise `MalformedEvent` on any fault."""
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    if size > max_bytes:
        raise MalformedEvent(f"event is {size} bytes, more than the {max_bytes} allowed")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"event is not valid UTF-8 (byte {exc.start})") from exc
    try:
        document = strict_json_loads(text)
    except RecursionError as exc:
        raise MalformedEvent("invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, over-long integers
        raise MalformedEvent(f"invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedEvent("event must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise MalformedEvent.from_validation_error(exc) from exc


def strict_json_loads(text: str | bytes) -> Any:
    """`json.loads` that refuses duplicate keys and NaN/Infinity: what every untrusted
    document on the usage path is parsed with. Raises `ValueError` (or `RecursionError`)."""
    return json.loads(
        text, object_pairs_hook=_without_duplicate_keys, parse_constant=_reject_constant
    )


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a duplicated key; refuse to pick one.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
