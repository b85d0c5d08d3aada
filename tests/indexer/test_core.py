"""Pure parts of the indexer: range adaptation, reorg walk-back, decoding specs, projections."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from indexer.blocks import BlockHeader, RawLog
from indexer.decoding import INDEXED_CONTRACTS, LogDecoder, snake_case
from indexer.lease import Lease, may_take
from indexer.projections import PROJECTION_TABLES, project
from indexer.ranges import AdaptiveRange
from indexer.reorg import BlockRef, common_ancestor, first_broken_link, inconsistent_logs
from indexer.rpc import is_refusal
from schemas.chain import ChainEvent, Staked
from schemas.tables import metadata

ADDRESS = "0x" + "ab" * 20


def test_range_grows_on_success_and_halves_on_refusal() -> None:
    r = AdaptiveRange(maximum=1000, size=10)
    r.succeeded(10)
    assert r.size == 20
    r.succeeded(5)  # a short (final) range says nothing about capacity
    assert r.size == 20
    assert r.refused(20)
    assert r.size == 10
    while r.refused(r.size):
        pass
    assert r.size == 1
    assert not r.refused(1)
    for _ in range(20):
        r.succeeded(r.size)
    assert r.size == 1000
    assert r.end(5, 100) == 100


@pytest.mark.parametrize(
    "message",
    [
        "query returned more than 10000 results",
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
        "too many results",
        "request timed out",
    ],
)
def test_refusals_are_recognised(message: str) -> None:
    assert is_refusal(message)
    assert not is_refusal("execution reverted")


def _headers(hashes: str, start: int = 10) -> list[BlockHeader]:
    out, parent = [], "p"
    for i, h in enumerate(hashes):
        out.append(BlockHeader(start + i, h, parent, 1000 + i))
        parent = h
    return out


def test_common_ancestor_is_the_highest_surviving_block() -> None:
    stored = {10: "a", 11: "b", 12: "c", 13: "d"}
    assert common_ancestor(stored, {10: "a", 11: "b", 12: "X", 13: "Y"}) == BlockRef(11, "b")
    assert common_ancestor(stored, {10: "Z", 11: "X"}) is None
    assert common_ancestor(stored, dict(stored)) == BlockRef(13, "d")


def test_broken_links_and_inconsistent_logs() -> None:
    headers = _headers("abcd")
    assert first_broken_link(BlockRef(9, "p"), headers) is None
    assert first_broken_link(BlockRef(9, "q"), headers) == 10
    broken = [*headers[:2], BlockHeader(12, "c", "zz", 0), headers[3]]
    assert first_broken_link(None, broken) == 12
    log = RawLog(ADDRESS, ("0x00",), "0x", 11, "b", 1, "0x" + "00" * 32, 0)
    by_number = {h.number: h for h in headers}
    assert inconsistent_logs([log], by_number) == []
    assert inconsistent_logs([RawLog(ADDRESS, (), "0x", 11, "x", 1, "t", 0)], by_number) == [11]


def test_snake_case() -> None:
    assert snake_case("pricePerUnitE6") == "price_per_unit_e6"
    assert snake_case("metadataURI") == "metadata_uri"
    assert snake_case("etaSeconds") == "eta_seconds"


def test_every_chain_event_of_the_abis_maps_onto_its_payload() -> None:
    # Building the decoder checks every argument against the payload fields.
    names = {
        "model_registry": "ModelRegistry",
        "license_nft": "LicenseNFT",
        "staking": "Staking",
        "royalty_policy": "RoyaltyPolicy",
        "governor": "RoyaltyGovernor",
        "royalty_distributor": "RoyaltyDistributor",
    }
    assert set(names) == set(INDEXED_CONTRACTS)
    contracts = {f"0x{i + 1:040x}": name for i, name in enumerate(names.values())}
    decoder = LogDecoder(31337, contracts)
    unknown = RawLog(f"0x{1:040x}", ("0x" + "11" * 32,), "0x", 1, "0x" + "22" * 32, 5, "t", 0)
    result = decoder.decode(unknown, 5)
    assert not isinstance(result, ChainEvent)
    assert result.reason == "unknown_topic"


def test_projection_rows_carry_the_log_position_and_name_real_tables() -> None:
    assert set(PROJECTION_TABLES) <= set(metadata.tables)
    event = ChainEvent(
        chain_id=1,
        block_number=7,
        block_hash="0x" + "cd" * 32,
        block_timestamp=99,
        tx_hash="0x" + "ef" * 32,
        log_index=3,
        contract=ADDRESS,
        payload=Staked(model_id=1, staker=ADDRESS, amount=5, stake_after=5, total_after=9),
    )
    (row,) = project(event)
    assert row.table == "chain_stakes"
    assert set(row.values) == {c.name for c in metadata.tables["chain_stakes"].c}
    assert (row.values["block_number"], row.values["log_index"]) == (7, 3)


ME = Lease(owner="me", host="host-a", pid=100, expires_at=0)


def _held(**changes: Any) -> Lease:
    return dataclasses.replace(
        Lease(owner="other", host="host-a", pid=200, expires_at=1_000), **changes
    )


@pytest.mark.parametrize(
    ("held", "alive", "allowed"),
    [
        (None, True, True),  # nobody holds it
        (_held(owner="me"), True, True),  # ours
        (_held(expires_at=999), True, True),  # expired
        (_held(), True, False),  # live holder on this host
        (_held(), False, True),  # its process died on this host
        (_held(host="host-b"), False, False),  # another host: only expiry frees it
        (_held(pid=100), False, False),  # same pid, another follower of this process
    ],
)
def test_who_may_take_the_lease(held: Lease | None, alive: bool, allowed: bool) -> None:
    assert may_take(held, ME, now=999.5, alive=lambda _pid: alive) is allowed


def test_range_fits_the_log_target() -> None:
    r = AdaptiveRange(maximum=2000, size=100, target_logs=1000)
    r.succeeded(100, 4000)  # 40 logs a block: 25 blocks hold the target
    assert r.size == 25
    r.succeeded(25, 1000)  # on target: stays
    assert r.size == 25
    r.succeeded(25, 10)  # sparse: grows, at most twice as large
    assert r.size == 50
    for _ in range(10):
        r.succeeded(r.size, 0)
    assert r.size == 2000
    r.succeeded(10, 0)  # a short (final) range says nothing
    assert r.size == 2000
