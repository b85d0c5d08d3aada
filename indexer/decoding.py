"""ABI-driven decoding of our contracts' logs into the typed chain events of `schemas.chain`.

The event signatures, their topic hashes and the argument layout all come from the committed
artifacts (`settlement.chain.artifacts`); nothing here spells a topic hash or an argument
order by hand. A Solidity event maps to a payload kind through `SOLIDITY_EVENTS`, and its
arguments to payload fields by name (camelCase → snake_case, plus the few renames below), and
building the decoder fails if any argument has no field or any field no argument, so an ABI
change cannot silently drop data.

A log that is not one of our chain events is never an error: it comes back as `Undecoded`
with a reason (`not_indexed`, `unknown_topic`, `undecodable`) for the raw-log table.

The backfill's hot path: an event whose arguments are all single 32-byte words, each of an ABI
type whose strict range check here is exactly what its payload field's validator accepts
(`uint64` into `Uint64`, any `uint` into `Uint256`, `address` into `Address` via the same
checksum function, `bytes32`, `bool`), and whose model has no cross-field validator, is built
without running pydantic validation again (`model_construct`); so is the envelope, after the
same checks its validators make. Anything else, and any value a check does not pass, goes
through full validation, so the result (and the error of an undecodable log) is the same either
way; `tests/indexer/test_decoding.py` compares both paths on every event kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import event_abi_to_log_topic
from pydantic import StrictBool, ValidationError
from pydantic.fields import FieldInfo

from indexer.blocks import RawLog
from indexer.errors import IndexerConfigError
from schemas.base import construct_unvalidated
from schemas.chain import PAYLOAD_MODELS, SOLIDITY_EVENTS, ChainEvent, EventPayload
from schemas.evm import Address, Bytes32, checksum_address
from schemas.money import UINT64_MAX, Uint8, Uint64, Uint256
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
    trusted: tuple[Slot, ...] | None = None  # the plan of the fast path, if it has one


@dataclass(frozen=True)
class Slot:
    """One argument on the fast path: where its word is and how it becomes the field value."""

    field: str
    topic: int  # its topic (1..3), or 0 for a data word
    word: int  # its data word index (data words only)
    read: Callable[[str], Any]  # 64 lower-case hex digits -> value; ValueError if out of range


@dataclass(frozen=True)
class TrustedPlan:
    """How an event with a fast path is read (what `LogDecoder` checks and reads before it
    builds the event without validation; `indexer.batch` writes its rows the same way)."""

    kind: str
    contract: str  # checksummed
    topics: int  # topic 0 included
    data_words: int
    slots: tuple[Slot, ...]  # in the payload's field order


_ZERO_PADDING = "0" * 24


def _word_reader(abi_type: str, convert: Callable[[Any], Any] | None) -> Callable[[str], Any]:
    """`_static_word` for a word already known to be 64 lower-case hex digits."""
    if abi_type == "uint256":
        return lambda word: int(word, 16)
    if abi_type == "address" and convert is not None:

        def address(word: str) -> Any:
            if not word.startswith(_ZERO_PADDING):
                raise ValueError("address word has non-zero padding")
            return convert("0x" + word[24:])

        return address
    if convert is None:
        return lambda word: _static_word(word, abi_type)
    return lambda word: convert(_static_word(word, abi_type))


# Payload field types whose validator accepts exactly what `_static_word` returns for an ABI
# type (after `convert`): (the field's annotation and metadata) -> (accepted ABI types, convert).
_TRUSTED_FIELDS: tuple[tuple[FieldInfo, Callable[[str], bool], Callable[[Any], Any] | None], ...]
_TRUSTED_FIELDS = (
    (FieldInfo.from_annotation(Uint256), lambda t: _uint_bits(t) <= 256, None),
    (FieldInfo.from_annotation(Uint64), lambda t: _uint_bits(t) <= 64, None),
    (FieldInfo.from_annotation(Uint8), lambda t: _uint_bits(t) <= 8, None),
    (FieldInfo.from_annotation(Address), lambda t: t == "address", checksum_address),
    (FieldInfo.from_annotation(Bytes32), lambda t: t == "bytes32", None),
    (FieldInfo.from_annotation(StrictBool), lambda t: t == "bool", None),
)


def _uint_bits(abi_type: str) -> int:
    """The width of a `uintN` ABI type (1000 for any other type: never accepted)."""
    if not abi_type.startswith("uint"):
        return 1000
    return int(abi_type[4:] or 256)


def _trusted_convert(info: FieldInfo, abi_type: str) -> tuple[bool, Callable[[Any], Any] | None]:
    for trusted, accepts, convert in _TRUSTED_FIELDS:
        if (
            info.annotation == trusted.annotation
            and info.metadata == trusted.metadata
            and accepts(abi_type)
        ):
            return True, convert
    return False, None


def _trusted_plan(
    model: type[EventPayload], indexed: list[tuple[str, str]], data: list[tuple[str, str]]
) -> tuple[Slot, ...] | None:
    """The fast path of an event into `model`, or None when it must be validated."""
    if model.__pydantic_decorators__.model_validators:
        return None  # a cross-field rule (a policy's bps sum, a proposal's lengths)
    slots: list[Slot] = []
    places = [(f, t, i + 1, 0) for i, (f, t) in enumerate(indexed)]
    places += [(f, t, 0, i) for i, (f, t) in enumerate(data)]
    for field, abi_type, topic, word in places:
        info = model.model_fields[field]
        trusted, convert = _trusted_convert(info, abi_type)
        if not trusted:
            return None
        slots.append(Slot(field, topic, word, _word_reader(abi_type, convert)))
    order = list(model.model_fields)  # values in field order, as validation leaves them
    return tuple(sorted(slots, key=lambda slot: order.index(slot.field)))


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
    static_data = all(_STATIC_TYPES.fullmatch(t) for _, t in data)
    trusted = None
    if kind is not None and static_data:
        trusted = _trusted_plan(PAYLOAD_MODELS[kind], list(indexed), data)
    return _EventSpec(
        name=name,
        kind=kind,
        indexed=indexed,
        data_fields=tuple(f for f, _ in data),
        data_types=tuple(t for _, t in data),
        static_data=static_data,
        trusted=trusted,
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


_ENVELOPE_SET = frozenset(ChainEvent.model_fields) - {"removed"}  # as validation records them
HEX_TEXT = re.compile(r"0x[0-9a-f]*")
HASH_WORDS = re.compile(r"0x[0-9a-f]{64}(?: 0x[0-9a-f]{64})*")  # hashes and topics, " "-joined


def trusted_shape(log: RawLog, block_timestamp: int, topics: int, data_words: int) -> bool:
    """Whether `log` has the shape an event with `topics` topics and `data_words` static data
    words must have, and an envelope its validators would accept as it is (the fast path's
    checks before its argument words are read)."""
    data = log.data
    return (
        len(log.topics) == topics
        and len(data) == 2 + 64 * data_words
        and type(log.block_number) is int
        and type(log.log_index) is int
        and type(block_timestamp) is int
        and 0 <= log.block_number <= UINT64_MAX
        and 0 <= log.log_index <= UINT64_MAX
        and 0 <= block_timestamp <= UINT64_MAX
        and HASH_WORDS.fullmatch(" ".join((log.block_hash, log.tx_hash, *log.topics))) is not None
        and HEX_TEXT.fullmatch(data) is not None
    )


class LogDecoder:
    """Decodes the logs of one deployment's indexed contracts into `ChainEvent`s."""

    def __init__(self, chain_id: int, contracts: Mapping[str, str], *, fast: bool = True) -> None:
        """`contracts`: address → artifact name of every contract to decode. `fast=False`
        validates every event in full (the reference the fast path is tested against)."""
        self.chain_id = chain_id
        self.fast = fast and type(chain_id) is int and 0 < chain_id <= UINT64_MAX
        self._specs: dict[tuple[str, str], _EventSpec] = {}
        self._checksums = {a.lower(): checksum_address(a.lower()) for a in contracts}
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

    def trusted_plans(self) -> dict[tuple[str, str], TrustedPlan]:
        """The events decoded without validation, by (address, topic 0); empty when this
        decoder validates everything."""
        if not self.fast:
            return {}
        return {
            (address, topic): TrustedPlan(
                kind=spec.kind,
                contract=self._checksums[address],
                topics=len(spec.indexed) + 1,
                data_words=len(spec.data_types),
                slots=spec.trusted,
            )
            for (address, topic), spec in self._specs.items()
            if spec.kind is not None and spec.trusted is not None
        }

    def decode(self, log: RawLog, block_timestamp: int) -> ChainEvent | Undecoded:
        """The chain event of `log`, or why it has none."""
        if not log.topics:
            return Undecoded(log, "unknown_topic", "anonymous log (no topics)")
        spec = self._specs.get((log.address, log.topics[0]))
        if spec is None:
            return Undecoded(log, "unknown_topic", f"topic {log.topics[0]} not in the ABI")
        if spec.kind is None:
            return Undecoded(log, "not_indexed", spec.name)
        if spec.trusted is not None and self.fast:
            event = self._trusted(spec, spec.trusted, log, block_timestamp)
            if event is not None:
                return event
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

    def _trusted(
        self, spec: _EventSpec, slots: tuple[Slot, ...], log: RawLog, block_timestamp: int
    ) -> ChainEvent | None:
        """The event built without validation, or None when any check fails (the caller then
        validates in full, which reports the fault)."""
        topics, data = log.topics, log.data
        if not trusted_shape(log, block_timestamp, len(spec.indexed) + 1, len(spec.data_types)):
            return None
        values: dict[str, Any] = {"kind": spec.kind}
        try:
            for slot in slots:
                if slot.topic:
                    values[slot.field] = slot.read(topics[slot.topic][2:])
                else:
                    values[slot.field] = slot.read(data[2 + 64 * slot.word : 66 + 64 * slot.word])
        except ValueError:
            return None
        assert spec.kind is not None
        payload = construct_unvalidated(PAYLOAD_MODELS[spec.kind], values, set(values))
        envelope = {
            "chain_id": self.chain_id,
            "block_number": log.block_number,
            "block_hash": log.block_hash,
            "block_timestamp": block_timestamp,
            "tx_hash": log.tx_hash,
            "log_index": log.log_index,
            "contract": self._checksums[log.address],
            "removed": False,
            "payload": payload,
        }
        return construct_unvalidated(ChainEvent, envelope, set(_ENVELOPE_SET))

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
