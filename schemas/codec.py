"""Canonical JSON bytes for everything the engine publishes, and the defensive decoder.

Encoding is canonical (sorted keys, no whitespace, UTF-8, `None` fields omitted), so the same
record always has the same bytes: producers, signers and verifiers agree without negotiating,
and a message hash identifies its content. Decoding is defensive because the `usage` topic is
fed by metering nodes we do not run: size-capped, strict UTF-8, duplicate keys and `NaN`
rejected, every failure reported as a `MalformedEvent` with a reason fit for a dead letter.

Both run through orjson where it gives the same answer as the standard library, and fall back
to the standard library everywhere else: `canonical_json` for values orjson refuses (integers
beyond 64 bits, non-string keys, unknown types), `decode` for any document that is not already
in canonical form (whitespace, key order, escapes, duplicate keys: the strict parser decides
those exactly as before). A canonical document re-encodes to its own bytes, so it cannot hold a
duplicate key, and orjson refuses NaN and Infinity on its own.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.errors import MalformedEvent

MAX_EVENT_BYTES = 64 * 1024
"""Largest encoded message accepted; a usage event is a few hundred bytes."""

ModelT = TypeVar("ModelT", bound=BaseModel)


_ORJSON_CANONICAL = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of a JSON value: sorted keys, no whitespace, UTF-8.

    orjson encodes strings, integers, booleans, lists and objects byte for byte as
    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``. What it refuses
    (integers beyond 64 bits, non-string keys, str/int subclasses, other types) and any output
    holding a `null` (orjson writes NaN as null; the standard library refuses it) is encoded by
    the standard library, which answers or raises exactly as it always did. Records hold no
    floats (amounts are integers); a float elsewhere gets orjson's shortest round-trip spelling.
    """
    try:
        encoded = orjson.dumps(value, option=_ORJSON_CANONICAL)
    except TypeError:  # orjson.JSONEncodeError: what orjson refuses
        return _stdlib_canonical_json(value)
    return _stdlib_canonical_json(value) if b"null" in encoded else encoded


def _stdlib_canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode(event: BaseModel) -> bytes:
    """The canonical JSON bytes of a record (`None` fields omitted)."""
    return canonical_json(event.model_dump(mode="json", exclude_none=True))


def decode(model: type[ModelT], raw: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES) -> ModelT:
    """Parse and validate one JSON document as `model`; raise `MalformedEvent` on any fault."""
    try:
        encoded = raw.encode("utf-8") if isinstance(raw, str) else raw
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise MalformedEvent(f"event is not valid UTF-8 (character {exc.start})") from exc
    if len(encoded) > max_bytes:
        raise MalformedEvent(f"event is {len(encoded)} bytes, more than the {max_bytes} allowed")
    document = canonical_document(encoded)
    if document is None:
        document = _strict_document(raw)
    if not isinstance(document, dict):
        raise MalformedEvent("event must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise MalformedEvent.from_validation_error(exc) from exc


def canonical_document(encoded: bytes) -> Any | None:
    """The JSON value of `encoded` when `encoded` is exactly its canonical encoding (what every
    producer of this system writes), else None (the strict parser must judge it).

    A canonical encoding holds each key of an object once and no NaN, so orjson's reading of it
    is the strict parser's."""
    try:
        document = orjson.loads(encoded)
    except orjson.JSONDecodeError:
        return None
    return document if canonical_json(document) == encoded else None


def _strict_document(raw: bytes | str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"event is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return strict_json_loads(text)
    except RecursionError as exc:
        raise MalformedEvent("invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, over-long integers
        raise MalformedEvent(f"invalid JSON: {exc}") from exc


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
