"""JSON Schemas of the published records, exported to `schemas/jsonschema/<name>.json`.

The files are committed and published: consumers of the topics and the API validate against
them, and a test fails when a model changes without them being regenerated
(`royalty schemas export`). They describe the JSON we emit (pydantic's serialisation mode):
amounts as decimal strings, addresses checksummed, times in RFC 3339.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.accrual import Accrual, DeadLetter
from schemas.chain import ChainCloudEvent, FinalizedWatermark, FinalizedWatermarkCloudEvent
from schemas.epoch import Allocation, Epoch
from schemas.usage import UsageEvent

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).parent / "jsonschema"
"""Where the committed schema files live."""

PUBLISHED: dict[str, type[BaseModel]] = {
    "usage_event": UsageEvent,
    "chain_event": ChainCloudEvent,
    "chain_watermark": FinalizedWatermarkCloudEvent,
    "finalized_watermark": FinalizedWatermark,
    "accrual": Accrual,
    "dead_letter": DeadLetter,
    "epoch": Epoch,
    "allocation": Allocation,
}
"""The published record types, by file name (without `.json`)."""


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of what `model` serialises to."""
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode="serialization")}


def render(model: type[BaseModel]) -> str:
    """The file content for `model`: stable (sorted keys, 2-space indent), newline-terminated."""
    return json.dumps(json_schema(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name → content, for every published record type."""
    return {f"{name}.json": render(model) for name, model in PUBLISHED.items()}


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into `directory` (created if needed); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, content in rendered().items():
        path = directory / filename
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files in `directory` that are missing or differ from a fresh export."""
    out_of_date = []
    for filename, content in rendered().items():
        path = directory / filename
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            out_of_date.append(filename)
    return out_of_date
