"""ABI-driven decoding of our contracts' logs into the typed chain events of `schemas.chain`.

The event signatures, their topic hashes and the argument layout all come from the committed
artifacts (`settlement.chain.artifacts`); nothing here spells a topic hash or an argument
order by hand. A Solidity event maps to a payload kind through `SOLIDITY_EVENTS`, and its
arguments to payload fields by name (camelCase → snake_case, plus the few renames below), and
building the decoder fails if any argument has no field or any field no argument, so an ABI
change cannot silently drop data.

A log that is not one of our chain events is never an error: it comes back as `Undecoded`
with a reason (`not_indexed`, `unknown_topic`, `undecodable`) for the raw-log table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import event_abi_to_log_topic
from pydantic import ValidationError

from indexer.blocks import RawLog
from indexer.errors import IndexerConfigError
from schemas.chain import PAYLOAD_MODELS, SOLIDITY_EVENTS, ChainEvent
from settlement.chain.artifacts import load_artifact
from settlement.chain.manifest import DeploymentManifest

#: Manifest keys of the contracts whose events are chain events (the tokens and the timelock
#: emit nothing the engine needs).
INDEXED_CONTRACTS: tuple[str, ...] = (
    "model_registry",
    "license_nft",
    "staking",
    "royalty_policy",
    "governor",
    "royalty_distributor",
)

#: Arguments whose payload field is not their snake_case name, by Solidity event.
_FIELD_RENAMES: dict[str, dict[str, str]] = {
    "Transfer": {"from": "from_address", "to": "to_address", "tokenId": "license_id"},
}

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    """`pricePerUnitE6` → `price_per_unit_e6`, `metadataURI` → `metadata_uri`."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


@dataclass(frozen=True)
class Undecoded:
    """A log kept raw, with why."""

    log: RawLog
    reason: str
    detail: str


@dataclass(frozen=True)
class _EventSpec:
    """How to decode one Solidity event of one contract."""

    name: str
    kind: str | None  # None: an ABI event that is not a chain event (e.g. `Approval`)
    indexed: tuple[tuple[str, str], ...]  # (field, ABI type) of the topics after topic 0
    data_fields: tuple[str, ...]
    data_types: tuple[str, ...]
    static_data: bool  # every data argument one 32-byte word (decoded by slicing)


def _event_spec(contract: str, event_abi: Mapping[str, Any]) -> _EventSpec:
    name = str(event_abi["name"])
    kind = SOLIDITY_EVENTS.get(name)
    renames = _FIELD_RENAMES.get(name, {})
    inputs = event_abi["inputs"]
    fields = [renames.get(i["name"], snake_case(i["name"])) for i in inputs]
    if kind is not None:
        expected = set(PAYLOAD_MODELS[kind].model_fields) - {"kind"}
        if name == "VoteCast":
            expected.discard("params")  # the plain VoteCast has none
        if set(fields) != expected:
            raise IndexerConfigError(
                f"{contract}.{name}: ABI arguments {sorted(fields)} do not match the "
                f"{kind} payload fields {sorted(expected)}"
            )
    indexed = tuple(
        (field, i["type"]) for field, i in zip(fields, inputs, strict=True) if i["indexed"]
    )
    data = [(field, i["type"]) for field, i in zip(fields, inputs, strict=True) if not i["indexed"]]
    return _EventSpec(
        name=name,
        kind=kind,
        indexed=indexed,
        data_fields=tuple(f for f, _ in data),
        data_types=tuple(t for _, t in data),
        static_data=all(_STATIC_TYPES.fullmatch(t) for _, t in data),
    )


_STATIC_TYPES = re.compile(r"uint\d*|address|bool|bytes32")


def _static_word(word: str, abi_type: str) -> Any:
    """One 32-byte ABI word (64 hex digits) of a static type, strictly checked; other types
    (signed integers, short byte strings) go through eth_abi."""
    if len(word) != 64:
        raise ValueError(f"a {abi_type} word must be 32 bytes")
    if abi_type == "bytes32":
        return "0x" + word
    value = int(word, 16)
    if abi_type == "address":
        if value >> 160:
            raise ValueError("address word has non-zero padding")
        return "0x" + word[24:]
    if abi_type == "bool":
        if value > 1:
            raise ValueError("bool word is neither 0 nor 1")
        return value == 1
    if abi_type.startswith("uint"):
        bits = int(abi_type[4:] or 256)
        if value >> bits:
            raise ValueError(f"{abi_type} word out of range")
        return value
    (decoded,) = abi_decode([abi_type], bytes.fromhex(word))
    return _json_value(decoded, abi_type)


def _json_value(value: Any, abi_type: str) -> Any:
    """eth_abi's Python value as the payload models take it (bytes as 0x hex, lists as tuples)."""
    if abi_type.endswith("]"):
        inner = abi_type[: abi_type.rindex("[")]
        return tuple(_json_value(v, inner) for v in value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return value


class LogDecoder:
    """Decodes the logs of one deployment's indexed contracts into `ChainEvent`s."""

    def __init__(self, chain_id: int, contracts: Mapping[str, str]) -> None:
        """`contracts`: address → artifact name of every contract to decode."""
        self.chain_id = chain_id
        self._specs: dict[tuple[str, str], _EventSpec] = {}
        self.addresses: tuple[str, ...] = tuple(sorted(a.lower() for a in contracts))
        for address, artifact_name in contracts.items():
            for entry in load_artifact(artifact_name).abi:
                if entry.get("type") != "event" or entry.get("anonymous"):
                    continue
                topic = "0x" + event_abi_to_log_topic(entry).hex()  # type: ignore[arg-type]
                self._specs[(address.lower(), topic)] = _event_spec(artifact_name, entry)

    @classmethod
    def for_manifest(cls, manifest: DeploymentManifest) -> LogDecoder:
        """The decoder of a deployment's indexed contracts (`INDEXED_CONTRACTS`)."""
        return cls(
            manifest.chain_id,
            {manifest.address(key): manifest.contracts[key].contract for key in INDEXED_CONTRACTS},
        )

    def decode(self, log: RawLog, block_timestamp: int) -> ChainEvent | Undecoded:
        """The chain event of `log`, or why it has none."""
        if not log.topics:
            return Undecoded(log, "unknown_topic", "anonymous log (no topics)")
        spec = self._specs.get((log.address, log.topics[0]))
        if spec is None:
            return Undecoded(log, "unknown_topic", f"topic {log.topics[0]} not in the ABI")
        if spec.kind is None:
            return Undecoded(log, "not_indexed", spec.name)
        try:
            payload = self._arguments(spec, log)
            payload["kind"] = spec.kind
            return ChainEvent(
                chain_id=self.chain_id,
                block_number=log.block_number,
                block_hash=log.block_hash,
                block_timestamp=block_timestamp,
                tx_hash=log.tx_hash,
                log_index=log.log_index,
                contract=log.address,
                payload=payload,  # validated into the kind's model
            )
        except (DecodingError, ValueError, ValidationError, OverflowError) as exc:
            return Undecoded(log, "undecodable", f"{spec.name}: {exc}"[:2000])

    def _arguments(self, spec: _EventSpec, log: RawLog) -> dict[str, Any]:
        if len(log.topics) != len(spec.indexed) + 1:
            raise ValueError(
                f"{len(log.topics) - 1} indexed topics, the ABI has {len(spec.indexed)}"
            )
        arguments: dict[str, Any] = {}
        for (field, abi_type), topic in zip(spec.indexed, log.topics[1:], strict=True):
            arguments[field] = _static_word(topic[2:], abi_type)
        if spec.static_data:
            # Every argument a 32-byte word: slice the hex (a backfill's hot path).
            data = log.data[2:]
            if len(data) != 64 * len(spec.data_types):
                raise ValueError(
                    f"data is {len(data) // 2} bytes, expected {32 * len(spec.data_types)}"
                )
            for i, (field, abi_type) in enumerate(
                zip(spec.data_fields, spec.data_types, strict=True)
            ):
                arguments[field] = _static_word(data[64 * i : 64 * i + 64], abi_type)
            return arguments
        values = abi_decode(list(spec.data_types), bytes.fromhex(log.data[2:]))
        for field, abi_type, value in zip(spec.data_fields, spec.data_types, values, strict=True):
            arguments[field] = _json_value(value, abi_type)
        return arguments

    def decode_all(
        self, logs: Iterable[RawLog], timestamps: Mapping[int, int]
    ) -> tuple[list[ChainEvent], list[Undecoded]]:
        """Decode `logs` (block timestamps from the logs, else from `timestamps` by number)."""
        events: list[ChainEvent] = []
        undecoded: list[Undecoded] = []
        for log in logs:
            stamp = log.block_timestamp
            if stamp is None:
                stamp = timestamps[log.block_number]
            result = self.decode(log, stamp)
            if isinstance(result, ChainEvent):
                events.append(result)
            else:
                undecoded.append(result)
        return events, undecoded
