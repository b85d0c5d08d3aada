"""CloudEvents 1.0 in structured JSON mode: the attribute types our events share.

Every message on the `usage` and `chain` topics is one CloudEvent in structured JSON mode, its
attributes at the top level of the JSON object next to `data`, encoded by `schemas.codec`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

SPECVERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"

EventId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""A CloudEvents `id`: 1 to 128 characters, no control characters."""

SourceRef = Annotated[
    str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[^\s\x00-\x1f\x7f]+$")
]
"""A CloudEvents `source`: a non-empty URI-reference (no whitespace or control characters)."""

ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""A short single-line label (model version, request id, key id)."""
