"""The parts of a KServe v2 inference body that metering reads: shapes and integer outputs.

A KServe v2 HTTP body is a JSON document, optionally followed by binary tensor data (Triton's
binary tensor extension): then the `Inference-Header-Content-Length` header gives the JSON
part's length, and each tensor sent in binary carries `parameters.binary_data_size`, its bytes
following one another after the JSON in the order of the tensors. The gateway forwards bodies
untouched; this module only reads them, and only when the model's billing metric needs it.

Pure: bytes in, numbers out; every malformation raises `InvalidInput` with a reason.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metering.errors import InvalidInput

# Little-endian struct codes of the integer datatypes a units tensor may have.
_INT_FORMATS = {
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
}


@dataclass(frozen=True)
class InferenceBody:
    """A parsed KServe v2 request or response: its JSON header and its binary tail."""

    header: Mapping[str, Any]
    binary: bytes = b""

    @classmethod
    def parse(cls, body: bytes, header_length: int | None = None) -> InferenceBody:
        """Split and parse `body`; `header_length` is the `Inference-Header-Content-Length`."""
        if header_length is None:
            head, tail = body, b""
        else:
            if header_length < 0 or header_length > len(body):
                raise InvalidInput(
                    f"Inference-Header-Content-Length {header_length} does not fit the "
                    f"{len(body)}-byte body"
                )
            head, tail = body[:header_length], body[header_length:]
        try:
            doc = json.loads(head)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(f"malformed KServe v2 body: {exc}") from exc
        if not isinstance(doc, dict):
            raise InvalidInput("malformed KServe v2 body: not a JSON object")
        return cls(doc, tail)

    def tensors(self, kind: str) -> list[Mapping[str, Any]]:
        """The `inputs` or `outputs` entries, checked to be objects with a name."""
        entries = self.header.get(kind, [])
        if not isinstance(entries, list):
            raise InvalidInput(f"malformed KServe v2 body: `{kind}` is not a list")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InvalidInput(f"malformed KServe v2 body: an entry of `{kind}` has no name")
        return entries

    def batch_size(self, input_name: str | None = None) -> int:
        """The first dimension of `input_name` (default: the first input)."""
        inputs = self.tensors("inputs")
        if not inputs:
            raise InvalidInput("malformed KServe v2 request: no inputs")
        entry = _named(inputs, input_name) if input_name else inputs[0]
        if entry is None:
            raise InvalidInput(f"request has no input {input_name!r}")
        shape = _shape(entry)
        if not shape:
            raise InvalidInput(f"input {entry['name']!r} is a scalar: no batch dimension")
        return shape[0]

    def check_no_shared_memory(self) -> None:
        """`refuse_shared_memory` for this body's inputs and outputs."""
        for kind in ("inputs", "outputs"):
            refuse_shared_memory(
                (str(e["name"]), p if isinstance(p := e.get("parameters"), dict) else ())
                for e in self.tensors(kind)
            )

    def requested_outputs(self) -> list[str] | None:
        """The outputs a request asks for, or None when it asks for all of them."""
        if "outputs" not in self.header:
            return None
        return [str(entry["name"]) for entry in self.tensors("outputs")]

    def output_sum(self, output_name: str) -> int:
        """The sum of an integer output tensor, from its JSON `data` or its binary bytes."""
        outputs = self.tensors("outputs")
        offset = 0
        for entry in outputs:
            size = _binary_size(entry)
            if entry["name"] == output_name:
                datatype = entry.get("datatype")
                if datatype not in _INT_FORMATS:
                    raise InvalidInput(f"output {output_name!r} is {datatype}, not an integer")
                if size is not None:
                    if offset + size > len(self.binary):
                        raise InvalidInput(f"output {output_name!r}: binary data truncated")
                    return _sum_binary(self.binary[offset : offset + size], str(datatype))
                if "data" not in entry:
                    raise InvalidInput(f"output {output_name!r} carries no data")
                return _sum_json(entry["data"], output_name)
            if size is not None:
                offset += size
        raise InvalidInput(f"response has no output {output_name!r}")


SHARED_MEMORY_REGION = "shared_memory_region"
"""The tensor parameter that makes Triton read an input from, or write an output to, a
registered shared-memory region instead of the message."""


def refuse_shared_memory(tensors: Iterable[tuple[str, Iterable[str]]]) -> None:
    """Refuse a request whose tensors (name, parameter names) use shared memory: an output
    written there never passes through the gateway, so its units could escape metering."""
    for name, parameters in tensors:
        if SHARED_MEMORY_REGION in parameters:
            raise InvalidInput(
                f"tensor {name!r} uses a shared-memory region: not accepted through the "
                "metering gateway (send tensor data in the request)"
            )


def _named(entries: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((e for e in entries if e["name"] == name), None)


def _shape(entry: Mapping[str, Any]) -> list[int]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"tensor {entry['name']!r}: shape must be a list of integers >= 0")
    return shape


def _binary_size(entry: Mapping[str, Any]) -> int | None:
    params = entry.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"tensor {entry['name']!r}: bad binary_data_size")
    return size


def _sum_binary(data: bytes, datatype: str) -> int:
    code = _INT_FORMATS[datatype]
    width = struct.calcsize(code)
    if len(data) % width:
        raise InvalidInput(f"{datatype} binary data of {len(data)} bytes is not whole elements")
    return sum(v for (v,) in struct.iter_unpack("<" + code, data))


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _sum_json(data: Any, name: str) -> int:
    total = 0
    for value in _flatten(data):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput(f"output {name!r} holds a non-integer value")
        total += value
    return total
