"""Chain events: every payload of docs/chain-events.md, the envelope, the CloudEvent wrapper."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.chain import (
    CHAIN_EVENT_TYPE,
    CHAIN_RETRACTION_TYPE,
    CHAIN_WATERMARK_TYPE,
    PAYLOAD_MODELS,
    SOLIDITY_EVENTS,
    ChainCloudEvent,
    ChainEvent,
    ChainPosition,
    Claimed,
    FinalizedWatermark,
    FinalizedWatermarkCloudEvent,
    ModelRegistered,
    PolicySet,
    VoteCast,
    encode_chain_message,
    encode_watermark_message,
    kafka_key,
    parse_chain_message,
    parse_watermark_message,
)
from schemas.errors import MalformedEvent
from tests.schemas.schema_factories import (
    BLOCK_HASH,
    OPERATOR,
    PAYER,
    PAYLOAD_SAMPLES,
    chain_event_doc,
    payload_doc,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "chain-events.md"

# Where a payload field is not the snake_case of its Solidity parameter.
RENAMED = {"Transfer": {"from": "from_address", "to": "to_address", "token_id": "license_id"}}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _documented_events() -> dict[str, list[str]]:
    """Solidity event name → parameter names, from docs/chain-events.md."""
    events: dict[str, list[str]] = {}
    for name, params in re.findall(r"`(\w+)\(([^)]*)\)`", DOC.read_text()):
        names = [param.split()[-1] for param in params.split(",") if param.strip()]
        events[name] = names
    return events


def test_every_documented_event_has_a_payload_with_its_parameters() -> None:
    documented = _documented_events()
    assert len(documented) >= 24
    assert set(documented) == set(SOLIDITY_EVENTS)
    for event, params in documented.items():
        model = PAYLOAD_MODELS[SOLIDITY_EVENTS[event]]
        renamed = RENAMED.get(event, {})
        expected = {renamed.get(_snake(p), _snake(p)) for p in params}
        fields = set(model.model_fields) - {"kind"}
        if event == "VoteCast":
            fields -= {"params"}  # only VoteCastWithParams carries it
        assert fields == expected, event


def test_every_payload_has_a_sample() -> None:
    assert set(PAYLOAD_SAMPLES) == set(PAYLOAD_MODELS)


@pytest.mark.parametrize("kind", sorted(PAYLOAD_SAMPLES))
def test_each_event_round_trips_through_the_chain_topic(kind: str) -> None:
    event = ChainEvent.model_validate(chain_event_doc(kind))
    assert event.kind == kind
    assert isinstance(event.payload, PAYLOAD_MODELS[kind])
    message = ChainCloudEvent.wrap(event)
    raw = encode_chain_message(message)
    assert parse_chain_message(raw) == message
    assert ChainEvent.model_validate_json(event.model_dump_json()) == event
    # amounts and ids travel as decimal strings, never JSON numbers
    payload = json.loads(raw)["data"]["payload"]
    for name, value in PAYLOAD_SAMPLES[kind].items():
        if isinstance(value, str) and value.isdigit():
            assert payload[name] == value


def test_event_id_is_deterministic_from_the_envelope() -> None:
    event = ChainEvent.model_validate(chain_event_doc(block_hash="0x" + "AB" * 32))
    assert event.event_id == f"31337:{BLOCK_HASH}:3"
    assert event.position == ChainPosition(12, 3)
    again = ChainEvent.model_validate(json.loads(event.model_dump_json()))
    assert again.event_id == event.event_id
    other_block = ChainEvent.model_validate(chain_event_doc(block_hash="0x" + "ac" * 32))
    assert other_block.event_id != event.event_id


def test_a_wrong_claimed_event_id_is_rejected() -> None:
    doc = chain_event_doc(event_id=f"31337:{BLOCK_HASH}:4")
    with pytest.raises(ValidationError, match="does not match"):
        ChainEvent.model_validate(doc)
    assert ChainEvent.model_validate(chain_event_doc(event_id=f"31337:{BLOCK_HASH}:3"))


def test_retraction_is_its_own_cloud_event_type() -> None:
    event = ChainEvent.model_validate(chain_event_doc())
    announce = ChainCloudEvent.wrap(event)
    retract = ChainCloudEvent.wrap(event.retraction())
    assert announce.type == CHAIN_EVENT_TYPE
    assert retract.type == CHAIN_RETRACTION_TYPE
    assert announce.id == retract.id == event.event_id
    assert retract.data.removed is True
    assert announce.source == f"eip155:31337:{OPERATOR}"
    assert announce.subject == "ModelRegistered"
    # Keyed by the event id, so the retraction follows the event into its partition.
    assert kafka_key(announce) == kafka_key(retract) == f"31337:{BLOCK_HASH}:3".encode()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": CHAIN_RETRACTION_TYPE}, "type must be"),
        ({"id": "31337:0x00:1"}, "event_id"),
        ({"time": "2024-05-01T12:00:01Z"}, "block timestamp"),
        ({"type": "ai.royalty.chain.v2"}, "type"),
        ({"specversion": "1.1"}, "specversion"),
    ],
)
def test_inconsistent_cloud_events_are_malformed(change: dict[str, Any], reason: str) -> None:
    message = ChainCloudEvent.wrap(ChainEvent.model_validate(chain_event_doc()))
    doc = {**json.loads(encode_chain_message(message)), **change}
    with pytest.raises(MalformedEvent) as caught:
        parse_chain_message(json.dumps(doc))
    assert reason in caught.value.reason


def _with_payload(event_kind: str, **changes: Any) -> dict[str, Any]:
    return chain_event_doc(event_kind, payload={**payload_doc(event_kind), **changes})


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (_with_payload("Staked", amount=1.0), "amount"),
        (_with_payload("Staked", amount="-1"), "amount"),
        (_with_payload("Staked", amount=str(2**256)), "amount"),
        (_with_payload("Claimed", account="0x1234"), "account"),
        (_with_payload("Claimed", account=PAYER.lower()[:-1] + "X"), "account"),
        (_with_payload("LicenseMinted", expires_at="0"), "expires_at"),
        (_with_payload("LicenseMinted", expires_at=-1), "expires_at"),
        (_with_payload("LicenseOfferSet", active="true"), "active"),
        (_with_payload("EpochCommitted", merkle_root="0x1234"), "merkle_root"),
        (_with_payload("VoteCast", support=256), "support"),
        (_with_payload("ModelRegistered", extra="x"), "extra"),
        (_with_payload("ModelRegistered", kind="ModelDeleted"), "kind"),
        (chain_event_doc(payload={"model_id": "7"}), "kind"),
        (chain_event_doc(chain_id=0), "chain_id"),
        (chain_event_doc(block_number=-1), "block_number"),
        (chain_event_doc(block_number="12"), "block_number"),
        (chain_event_doc(log_index=1.0), "log_index"),
        (chain_event_doc(removed="false"), "removed"),
        (chain_event_doc(tx_hash="0x" + "cd" * 31), "tx_hash"),
        (chain_event_doc(contract="0xnothex"), "contract"),
        (chain_event_doc(unknown=1), "unknown"),
    ],
)
def test_hostile_chain_events_are_rejected(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChainEvent.model_validate(doc)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    "bps", [(2000, 1000, 6999), (10000, 1, 0), (0, 0, 0), (10001, 0, 0), (-1, 1, 10000)]
)
def test_policy_bps_must_sum_to_ten_thousand(bps: tuple[int, int, int]) -> None:
    operator, treasury, contributors = bps
    with pytest.raises(ValidationError):
        PolicySet(
            model_id=1, operator_bps=operator, treasury_bps=treasury, contributors_bps=contributors
        )
    assert PolicySet(model_id=0, operator_bps=0, treasury_bps=10000, contributors_bps=0)


def test_proposal_calls_must_line_up() -> None:
    doc = _with_payload("ProposalCreated", values=["0", "1"])
    with pytest.raises(ValidationError, match="differ in length"):
        ChainEvent.model_validate(doc)


def test_vote_cast_with_params_is_a_vote_cast() -> None:
    assert SOLIDITY_EVENTS["VoteCastWithParams"] == "VoteCast"
    assert SOLIDITY_EVENTS["Transfer"] == "LicenseTransferred"
    vote = VoteCast.model_validate({**PAYLOAD_SAMPLES["VoteCast"], "params": "0xABCD"})
    assert vote.params == "0xabcd"
    assert VoteCast.model_validate(PAYLOAD_SAMPLES["VoteCast"]).params is None


def test_addresses_in_payloads_are_checksummed() -> None:
    event = ChainEvent.model_validate(_with_payload("Claimed", account=PAYER.lower()))
    assert isinstance(event.payload, Claimed)
    assert event.payload.account == PAYER
    assert event.contract == OPERATOR


def test_chain_strings_are_not_capped() -> None:
    long_uri = "ipfs://" + "x" * 100_000
    event = ChainEvent.model_validate(_with_payload("ModelRegistered", metadata_uri=long_uri))
    assert isinstance(event.payload, ModelRegistered)
    assert event.payload.metadata_uri == long_uri


def test_finalized_watermark_round_trips() -> None:
    mark = FinalizedWatermark(
        chain_id=1,
        block_number=100,
        block_hash=BLOCK_HASH.upper().replace("0X", "0x"),
        block_timestamp=1714564800,
    )
    assert mark.block_hash == BLOCK_HASH
    assert FinalizedWatermark.model_validate_json(mark.model_dump_json()) == mark
    with pytest.raises(ValidationError):
        FinalizedWatermark(chain_id=1, block_number=1, block_hash="0x", block_timestamp=0)


def _watermark() -> FinalizedWatermark:
    return FinalizedWatermark(
        chain_id=31337, block_number=100, block_hash=BLOCK_HASH, block_timestamp=1714564800
    )


def test_watermark_cloud_event_round_trips() -> None:
    message = FinalizedWatermarkCloudEvent.wrap(_watermark())
    assert message.type == CHAIN_WATERMARK_TYPE
    assert message.id == f"31337:{BLOCK_HASH}"
    assert message.source == "eip155:31337"
    assert message.subject == "100"
    assert kafka_key(message) == b"31337"
    raw = encode_watermark_message(message)
    assert parse_watermark_message(raw) == message
    assert json.loads(raw)["time"] == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "31337:0x00"}, "id"),
        ({"source": "eip155:1"}, "source"),
        ({"time": "2024-05-01T12:00:01Z"}, "block timestamp"),
        ({"type": CHAIN_EVENT_TYPE}, "type"),
    ],
)
def test_inconsistent_watermark_cloud_events_are_malformed(
    change: dict[str, Any], reason: str
) -> None:
    doc = json.loads(encode_watermark_message(FinalizedWatermarkCloudEvent.wrap(_watermark())))
    with pytest.raises(MalformedEvent) as caught:
        parse_watermark_message(json.dumps({**doc, **change}))
    assert reason in caught.value.reason
