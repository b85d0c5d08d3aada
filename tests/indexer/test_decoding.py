"""The decoder's and the message encoder's fast paths against the full ones, on the logs of a
real chain: the same `ChainEvent`s (equal, same JSON, same fields set), the same `Undecoded`
for a damaged log, byte-identical messages and the same stored payload documents."""

from __future__ import annotations

import dataclasses
import json

import pytest

from indexer.messages import encoded_event, event_message, payload_json
from schemas.chain import ChainEvent
from schemas.codec import canonical_json
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import full_path_decoder, scripted_logs

pytestmark = [pytest.mark.anvil]


def test_fast_decoding_equals_full_validation(ix_system: System, ix_chain: ChainHarness) -> None:
    decoder, logs = scripted_logs(ix_system, ix_chain)
    full = full_path_decoder(decoder)
    assert decoder.fast
    kinds = set()
    for entry in logs:
        fast_result = decoder.decode(entry, 1_700_000_000)
        full_result = full.decode(entry, 1_700_000_000)
        assert fast_result == full_result
        if isinstance(fast_result, ChainEvent):
            assert isinstance(full_result, ChainEvent)
            kinds.add(fast_result.kind)
            assert fast_result.model_dump_json() == full_result.model_dump_json()
            assert repr(fast_result) == repr(full_result)
            assert fast_result.model_fields_set == full_result.model_fields_set
            assert fast_result.payload.model_fields_set == full_result.payload.model_fields_set
            assert fast_result.retraction() == full_result.retraction()
    # The kinds on the fast path and the validated ones are both exercised.
    assert {"Staked", "Unstaked", "Withdrawn", "LicenseMinted", "LicenseTransferred"} <= kinds
    assert {"Claimed", "EpochCommitted", "Paused", "Unpaused", "ProposalQueued"} <= kinds
    assert {"PolicySet", "ProposalCreated", "VoteCast", "ModelRegistered"} <= kinds


def test_damaged_logs_are_undecodable_on_both_paths(
    ix_system: System, ix_chain: ChainHarness
) -> None:
    decoder, logs = scripted_logs(ix_system, ix_chain)
    full = full_path_decoder(decoder)
    staked = next(
        e for e in logs if isinstance(r := decoder.decode(e, 1), ChainEvent) and r.kind == "Staked"
    )
    word = "f" * 64
    damaged = [
        dataclasses.replace(staked, data=staked.data[:-2]),  # short data
        dataclasses.replace(staked, topics=staked.topics[:2]),  # a topic missing
        # an address topic with non-zero padding
        dataclasses.replace(staked, topics=(*staked.topics[:2], "0x" + word)),
        dataclasses.replace(staked, block_hash="0x1234"),  # a malformed envelope
        dataclasses.replace(staked, data="0x" + "zz" * (len(staked.data) // 2 - 1)),
    ]
    for entry in damaged:
        fast_result, full_result = decoder.decode(entry, 1), full.decode(entry, 1)
        assert not isinstance(fast_result, ChainEvent)
        assert fast_result == full_result


def test_messages_and_payloads_are_byte_identical(
    ix_system: System, ix_chain: ChainHarness
) -> None:
    decoder, logs = scripted_logs(ix_system, ix_chain)
    events, _ = decoder.decode_all(logs, {})
    assert events
    for event in events:
        for variant in (event, event.retraction()):
            message, stored = encoded_event(variant)
            assert message == event_message(variant)
            assert json.loads(stored) == variant.payload.model_dump(mode="json")
            assert payload_json(variant.payload).encode() == canonical_json(
                variant.payload.model_dump(mode="json", exclude_none=True)
            )
