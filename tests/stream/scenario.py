"""The ground-truth scenario of the stream tests: a scripted chain history at exact times, a
shuffled stream of signed, forged, malformed, duplicate and late usage messages, and the
expected outcome of each, computed straight from the script (not through the join)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from metering.signing import KeyRing, Signer, SigningKey
from schemas.accrual import RejectReason
from schemas.usage import UsageData, UsageEvent, encode_usage_event
from settlement.chain import Split, System
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import fund_stakers, governance_round

MODEL_A, MODEL_B, UNKNOWN_MODEL = 1, 2, 99
EPOCH_S = 40
DEFAULT = (2_000, 1_000, 7_000)
VOTED = Split(1_000, 1_000, 8_000)


@dataclass(frozen=True)
class Expected:
    """What one message must become: an accrual with these fields, or a reject reason."""

    reason: RejectReason | None = None
    payer: str | None = None
    fee_e6: int = 0
    bps: tuple[int, int, int] = DEFAULT
    interval_block: int = 0
    epoch: int = 0


@dataclass
class Script:
    """The chain history as the test wrote it, and the messages with their expectations."""

    genesis: int = 0
    key_ring: KeyRing = field(default_factory=KeyRing)
    messages: list[bytes] = field(default_factory=list)
    expected: dict[str, Expected] = field(default_factory=dict)
    reject_counts: dict[RejectReason, int] = field(default_factory=dict)
    last_time: int = 0

    def expect_reject(self, reason: RejectReason) -> None:
        self.reject_counts[reason] = self.reject_counts.get(reason, 0) + 1


def _receipt_block(receipt: Any) -> int:
    return int(receipt["blockNumber"])


def build(system: System, chain: ChainHarness) -> Script:
    """Script the chain (on `chain`, inside the test's snapshot) and the usage stream."""
    a = chain.actors
    reg, nft, staking = system.model_registry, system.license_nft, system.staking
    fund_stakers(system, chain, [a.alice, a.bob])
    t0 = chain.now() + 100
    s = Script(genesis=t0)

    def at(offset: int) -> int:
        chain.next_block_at(t0 + offset)
        return t0 + offset

    at(0)
    reg_a = _receipt_block(reg.register_model(a.operator, MODEL_A, a.operator.address, "a"))
    at(1)
    reg_b = _receipt_block(reg.register_model(a.operator, MODEL_B, a.operator.address, "b"))
    at(2)
    l1 = nft.mint(a.operator, MODEL_A, a.alice.address, 1_500_000)
    at(3)
    l2 = nft.mint(a.operator, MODEL_A, a.bob.address, 2_000_000, t0 + 50)
    at(4)
    l3 = nft.mint(a.operator, MODEL_B, a.carol.address, 3)
    at(5)
    l4 = nft.mint(a.operator, MODEL_A, a.carol.address, 7)
    at(20)
    stake_1 = _receipt_block(staking.stake(a.alice, MODEL_A, 500))
    at(30)
    chain.client.transact(
        nft.contract, "transferFrom", [a.alice.address, a.carol.address, l1], a.alice
    )
    at(40)
    nft.revoke(a.operator, l4)
    at(45)
    governance_round(system, chain, MODEL_A, VOTED)
    policy_block = chain.w3.eth.block_number
    tp = chain.now() - t0  # the vote executed here, mid-epoch
    at(tp + 10)
    stake_2 = _receipt_block(staking.stake(a.bob, MODEL_A, 300))
    s.last_time = t0 + tp + 30

    signer = Signer(SigningKey.generate("hmac-sha256", prefix="node"))
    intruder = Signer(SigningKey.generate("hmac-sha256", prefix="node"))
    s.key_ring = KeyRing([signer.key.verification_key()])
    counter = iter(range(10**6))

    def usage(offset: int, model: int, license_id: int, units: int = 3) -> UsageEvent:
        return UsageEvent.create(
            id=f"node:{next(counter)}",
            source="//metering/node",
            time=datetime.fromtimestamp(t0 + offset, UTC),
            data=UsageData(model_id=model, license_id=license_id, units=units),
            keyid=signer.keyid,
        )

    def valid(offset: int, license_id: int, payer: str, price: int, units: int = 3) -> None:
        model = MODEL_B if license_id == l3 else MODEL_A
        event = usage(offset, model, license_id, units)
        if model == MODEL_B:
            interval, bps = reg_b, DEFAULT
        else:
            changes = [reg_a] + [
                block
                for block, when in ((stake_1, 20), (policy_block, tp), (stake_2, tp + 10))
                if when <= offset
            ]
            interval = max(changes)
            bps = (VOTED.operator_bps, VOTED.treasury_bps, VOTED.contributors_bps)
            bps = bps if offset >= tp else DEFAULT
        s.expected[event.id] = Expected(
            payer=payer,
            fee_e6=units * price,
            bps=bps,
            interval_block=interval,
            epoch=offset // EPOCH_S,
        )
        s.messages.append(encode_usage_event(signer.sign(event)))

    def rejected(offset: int, model: int, license_id: int, reason: RejectReason) -> None:
        event = usage(offset, model, license_id)
        s.expected[event.id] = Expected(reason=reason)
        s.expect_reject(reason)
        s.messages.append(encode_usage_event(signer.sign(event)))

    alice, bob, carol = a.alice.address, a.bob.address, a.carol.address
    # License 1: alice's until it moves to carol at +30; the vote at tp; bob's stake at tp+10.
    for offset in (2, 19, 20, 29):
        valid(offset, l1, alice, 1_500_000, units=offset + 1)
    for offset in (30, 31, tp - 1, tp, tp + 9, tp + 10, tp + 29):
        valid(offset, l1, carol, 1_500_000, units=offset + 1)
    # License 2 expires at +50: valid at 49, expired at 50 and after.
    valid(49, l2, bob, 2_000_000)
    rejected(50, MODEL_A, l2, RejectReason.EXPIRED)
    rejected(51, MODEL_A, l2, RejectReason.EXPIRED)
    # License 4 revoked at +40: valid at 39, revoked from 40 on.
    valid(39, l4, carol, 7)
    rejected(40, MODEL_A, l4, RejectReason.REVOKED)
    rejected(tp + 5, MODEL_A, l4, RejectReason.REVOKED)
    # Model B, and its license used for model A.
    valid(4, l3, carol, 3, units=1_000_000)
    valid(tp + 1, l3, carol, 3)
    rejected(10, MODEL_A, l3, RejectReason.MODEL_MISMATCH)
    rejected(10, UNKNOWN_MODEL, l1, RejectReason.UNKNOWN_MODEL)
    rejected(10, MODEL_A, 10_000, RejectReason.UNKNOWN_LICENSE)
    rejected(1, MODEL_A, l1, RejectReason.UNKNOWN_LICENSE)  # before its mint at +2

    # Forged: signed by a key the ring does not hold, and a genuine one tampered with.
    forged = intruder.sign(usage(25, MODEL_A, l1).model_copy(update={"keyid": intruder.keyid}))
    s.messages.append(encode_usage_event(forged))
    tampered = signer.sign(usage(26, MODEL_A, l1))
    s.messages.append(encode_usage_event(tampered).replace(b'"units":3', b'"units":300', 1))
    s.expect_reject(RejectReason.BAD_SIGNATURE)
    s.expect_reject(RejectReason.BAD_SIGNATURE)
    # Malformed: not JSON, and a zero-unit event.
    s.messages += [
        b"{not json",
        encode_usage_event(usage(27, MODEL_A, l1)).replace(b'"units":3', b'"units":0', 1),
    ]
    s.expect_reject(RejectReason.MALFORMED)
    s.expect_reject(RejectReason.MALFORMED)

    rng = random.Random(6)
    # Out of order and late: shuffle everything, then redeliver some messages (duplicates),
    # among them a rejected one (its repeat is a duplicate too: the id was decided).
    rng.shuffle(s.messages)
    s.messages += [s.messages[0], s.messages[3], s.messages[3], s.messages[-1]]
    repeats = s.messages[-4:]
    for message in repeats:
        if message.startswith(b"{not") or b'"units":0' in message:
            s.expect_reject(RejectReason.MALFORMED)
        elif b'"units":300' in message or intruder.keyid.encode() in message:
            s.expect_reject(RejectReason.BAD_SIGNATURE)
        else:
            s.expect_reject(RejectReason.DUPLICATE)
    return s
