"""The join, pure: one usage event and the finalized chain state at its time → a decision.

A decision is `Accepted` (with its `Accrual`), `Rejected` (with a DESIGN.md reason code) or
`Held` (its time is not yet covered by the finalized chain: it must wait, not be rejected).
Checks run in this order, the first failure deciding the reason:

    malformed → bad_signature → duplicate → (held) → unknown_model → unknown_license
              → model_mismatch → expired → revoked

Signature and duplicate come before the hold so that a forged or replayed event never occupies
the hold buffer; the chain checks come after it because they need final state. No Kafka,
faust or database here: state comes through the `ChainView` port.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.accrual import Accrual, DeadLetter, RejectReason
from schemas.base import construct_unvalidated
from schemas.chain import ChainPosition
from schemas.errors import MalformedEvent
from schemas.evm import parse_address
from schemas.money import BPS_TOTAL
from schemas.usage import ReadUsage, UsageEvent, parse_usage_event, read_usage_event
from stream.epochs import EpochClock
from stream.errors import MissingPolicy
from stream.state import ChainView


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid usage event and what it accrues."""

    event: UsageEvent
    accrual: Accrual


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid usage event: never billed, dead-lettered with `reason` and `detail`.

    `event` is None when the payload did not parse (`malformed`).
    """

    reason: RejectReason
    detail: str
    event: UsageEvent | None = None

    def dead_letter(self, raw: bytes | str, received_at: datetime) -> DeadLetter:
        """The dead letter of this rejection, keeping the payload as received."""
        return DeadLetter.from_raw(
            raw,
            reason=self.reason,
            detail=self.detail,
            received_at=received_at,
            usage_id=None if self.event is None else self.event.id,
            source=None if self.event is None else self.event.source,
        )


@dataclass(frozen=True, slots=True)
class Held:
    """A usage event whose time is not strictly before the finalized chain's newest block time:
    its state could still change, so it waits and is decided again later."""

    event: UsageEvent
    finalized_time: int | None


Decision = Accepted | Rejected | Held


def parse(raw: bytes | str) -> UsageEvent | Rejected:
    """The usage event in `raw`, or its `malformed` rejection."""
    try:
        return parse_usage_event(raw)
    except MalformedEvent as exc:
        return Rejected(RejectReason.MALFORMED, exc.reason)


def read(raw: bytes | str) -> ReadUsage | Rejected:
    """The usage event in `raw` with its canonical bytes and signing payload
    (`read_usage_event`), or its `malformed` rejection."""
    try:
        return read_usage_event(raw)
    except MalformedEvent as exc:
        return Rejected(RejectReason.MALFORMED, exc.reason)


def join(
    event: UsageEvent,
    *,
    signature_error: str | None,
    seen: bool,
    state: ChainView,
    clock: EpochClock,
    min_epoch: int = 0,
) -> Decision:
    """Decide one parsed usage event.

    `signature_error` is the signature verdict (None: good; see `KeyRing.verdicts`), `seen`
    whether its id was already decided, `state` the finalized chain, `clock` the epochs.
    `min_epoch` is the earliest epoch still open: a late event whose own epoch was already
    computed is billed there, priced at its own time.
    """
    if signature_error is not None:
        return Rejected(RejectReason.BAD_SIGNATURE, signature_error, event)
    if seen:
        return Rejected(RejectReason.DUPLICATE, f"usage id {event.id} was already decided", event)
    t = event.unix_time
    finalized = state.finalized_time()
    if finalized is None or t >= finalized:
        return Held(event, finalized)
    return _join_final(event, t, state, clock, min_epoch)


def _join_final(
    event: UsageEvent, t: int, state: ChainView, clock: EpochClock, min_epoch: int
) -> Accepted | Rejected:
    data = event.data
    operator = state.model_operator(data.model_id, t)
    if operator is None:
        return _reject(RejectReason.UNKNOWN_MODEL, f"model {data.model_id} not registered", event)
    terms = state.license(data.license_id, t)
    if terms is None or terms.owner is None:
        return _reject(
            RejectReason.UNKNOWN_LICENSE, f"license {data.license_id} not held at {t}", event
        )
    if terms.model_id != data.model_id:
        return _reject(
            RejectReason.MODEL_MISMATCH,
            f"license {data.license_id} is for model {terms.model_id}, not {data.model_id}",
            event,
        )
    if terms.expires_at != 0 and t >= terms.expires_at:
        return _reject(
            RejectReason.EXPIRED,
            f"license {data.license_id} expired at {terms.expires_at}, event at {t}",
            event,
        )
    if terms.revoked:
        return _reject(
            RejectReason.REVOKED, f"license {data.license_id} revoked at or before {t}", event
        )
    policy = state.policy(data.model_id, t)
    if policy is None:
        raise MissingPolicy(f"no royalty policy for model {data.model_id} at {t}")
    fields = {
        "usage_id": event.id,
        "epoch": max(clock.epoch_of(t), min_epoch),
        "model_id": data.model_id,
        "license_id": data.license_id,
        "payer": terms.owner,
        "event_time": t,
        "units": data.units,
        "price_per_unit_e6": terms.price_per_unit_e6,
        "fee_e6": data.units * terms.price_per_unit_e6,
        "state_interval": state.state_interval(data.model_id, t),
        "operator": operator,
        "operator_bps": policy.operator_bps,
        "treasury_bps": policy.treasury_bps,
        "contributors_bps": policy.contributors_bps,
    }
    return Accepted(event, make_accrual(fields))


_UINT64_MAX = 2**64 - 1
_UINT256_MAX = 2**256 - 1
_CHECKSUMS: dict[str, str] = {}
_CHECKSUMS_MAX = 65_536


def _checksummed(address: object) -> str | None:
    """`parse_address(address)`, remembered (a stream names the same few accounts over and
    over); None when it is not an address."""
    if not isinstance(address, str):
        return None
    found = _CHECKSUMS.get(address)
    if found is None:
        try:
            found = parse_address(address)
        except ValueError:
            return None
        if len(_CHECKSUMS) >= _CHECKSUMS_MAX:
            _CHECKSUMS.clear()
        _CHECKSUMS[address] = found
    return found


def _uint(value: object, maximum: int) -> bool:
    return type(value) is int and 0 <= value <= maximum


_ACCRUAL_FIELDS = frozenset(Accrual.model_fields)


def make_accrual(fields: dict[str, Any]) -> Accrual:
    """`Accrual(**fields)`, without re-running pydantic on what is already known good.

    `usage_id` is taken from a parsed (validated) event; every other value is checked here
    against the rules `Accrual` states (integer ranges, EIP-55 addresses, bps summing to
    10,000, fee = units * price). Anything outside them takes the validating constructor, which
    then raises exactly as it always did. A value that passes is set on the instance as it is
    (what `model_construct` does, without its per-call field walk).
    """
    payer = _checksummed(fields["payer"])
    operator = _checksummed(fields["operator"])
    interval = fields["state_interval"]
    operator_bps = fields["operator_bps"]
    treasury_bps = fields["treasury_bps"]
    contributors_bps = fields["contributors_bps"]
    units = fields["units"]
    price = fields["price_per_unit_e6"]
    fee = fields["fee_e6"]
    if (
        payer is None
        or operator is None
        or type(interval) is not ChainPosition
        or not _uint(interval.block_number, _UINT64_MAX)
        or not _uint(interval.log_index, _UINT64_MAX)
        or not _uint(operator_bps, BPS_TOTAL)
        or not _uint(treasury_bps, BPS_TOTAL)
        or not _uint(contributors_bps, BPS_TOTAL)
        or operator_bps + treasury_bps + contributors_bps != BPS_TOTAL
        or not _uint(fields["model_id"], _UINT256_MAX)
        or not _uint(fields["license_id"], _UINT256_MAX)
        or not _uint(units, _UINT64_MAX)
        or units == 0
        or type(fields["usage_id"]) is not str
        or not _uint(fields["epoch"], _UINT64_MAX)
        or not _uint(fields["event_time"], _UINT64_MAX)
        or not _uint(price, _UINT256_MAX)
        or not _uint(fee, _UINT256_MAX)
        or fee != units * price
        or fields.keys() != _ACCRUAL_FIELDS
    ):
        return Accrual(**fields)
    values = {**fields, "payer": payer, "operator": operator}
    return construct_unvalidated(Accrual, values, set(values))


def _reject(reason: RejectReason, detail: str, event: UsageEvent) -> Rejected:
    return Rejected(reason, detail, event)
