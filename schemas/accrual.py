"""What the stream join emits: an `Accrual` per valid usage event, a `DeadLetter` per invalid one.

Both go to their topic (`accruals`, `usage.dead-letter`) and their table. Every usage event
ends as exactly one of the two: invalid events are never billed and never dropped silently.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import StrictBool, StringConstraints, model_validator

from schemas.base import Record
from schemas.chain import ChainPosition
from schemas.cloudevents import EventId, SourceRef
from schemas.codec import canonical_json
from schemas.evm import Address
from schemas.money import BPS_TOTAL, Bps, PositiveUint64, Uint64, Uint256
from schemas.timestamps import UtcDatetime

MAX_DEAD_LETTER_PAYLOAD = 64 * 1024
"""Characters of the raw payload a dead letter keeps (the rest is cut, and flagged)."""

MAX_DEAD_LETTER_DETAIL = 2000
"""Characters of the human-readable reason a dead letter keeps."""


class Accrual(Record):
    """A priced, valid usage event: what one inference owes, and the state that splits it.

    `fee_e6 = units * price_per_unit_e6`, exact, in 10^-6 payment-token base units.
    `state_interval` is the chain position of the last policy, stake, operator or treasury
    change in force for the model at `event_time` (`(0, 0)` if there was none): accruals of a
    model in one epoch with the same `state_interval` are summed and split once. The operator
    and policy in force are carried along so settlement splits without re-reading the chain.
    `epoch` is the epoch of its time (or `min_epoch` when the join is given one). The epoch
    whose distribution bills it is decided by the settler (`accruals.settled_epoch`): the same
    one, or for an accrual committed after that epoch was computed, the next one computed.
    """

    usage_id: EventId
    epoch: Uint64
    model_id: Uint256
    license_id: Uint256
    payer: Address
    event_time: Uint64
    units: PositiveUint64
    price_per_unit_e6: Uint256
    fee_e6: Uint256
    state_interval: ChainPosition
    operator: Address
    operator_bps: Bps
    treasury_bps: Bps
    contributors_bps: Bps

    @model_validator(mode="after")
    def _consistent(self) -> Accrual:
        if self.fee_e6 != self.units * self.price_per_unit_e6:
            raise ValueError(
                f"fee_e6 {self.fee_e6} != units {self.units} * price_per_unit_e6 "
                f"{self.price_per_unit_e6}"
            )
        total = self.operator_bps + self.treasury_bps + self.contributors_bps
        if total != BPS_TOTAL:
            raise ValueError(f"operator + treasury + contributors bps = {total}, not {BPS_TOTAL}")
        return self


def kafka_key(accrual: Accrual) -> bytes:
    """The Kafka key of an `accruals` message: the model id in decimal ASCII."""
    return str(accrual.model_id).encode("ascii")


ACCRUAL_ROW_COLUMNS = (
    "usage_id",
    "epoch",
    "model_id",
    "license_id",
    "payer",
    "event_time",
    "units",
    "price_per_unit_e6",
    "fee_e6",
    "state_block_number",
    "state_log_index",
    "operator",
    "operator_bps",
    "treasury_bps",
    "contributors_bps",
)
"""The flat columns of an accrual row (the `accruals` table and its analytics copy)."""


def accrual_row(a: Accrual) -> tuple[Any, ...]:
    """`a`'s values in `ACCRUAL_ROW_COLUMNS` order (the state interval flattened)."""
    return (
        a.usage_id,
        a.epoch,
        a.model_id,
        a.license_id,
        a.payer,
        a.event_time,
        a.units,
        a.price_per_unit_e6,
        a.fee_e6,
        a.state_interval.block_number,
        a.state_interval.log_index,
        a.operator,
        a.operator_bps,
        a.treasury_bps,
        a.contributors_bps,
    )


def encode_accrual(a: Accrual) -> bytes:
    """`encode(a)`, the `accruals` message value, from `a`'s fields directly: every field is
    required and its JSON form is known (uint256 as a decimal string, the state interval as a
    pair), so no dump is needed."""
    return canonical_json(
        {
            "usage_id": a.usage_id,
            "epoch": a.epoch,
            "model_id": str(a.model_id),
            "license_id": str(a.license_id),
            "payer": a.payer,
            "event_time": a.event_time,
            "units": a.units,
            "price_per_unit_e6": str(a.price_per_unit_e6),
            "fee_e6": str(a.fee_e6),
            "state_interval": [a.state_interval.block_number, a.state_interval.log_index],
            "operator": a.operator,
            "operator_bps": a.operator_bps,
            "treasury_bps": a.treasury_bps,
            "contributors_bps": a.contributors_bps,
        }
    )


class RejectReason(StrEnum):
    """Why a usage event was not billed: the reason codes of the design, and no others."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    DUPLICATE = "duplicate"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_LICENSE = "unknown_license"
    MODEL_MISMATCH = "model_mismatch"
    EXPIRED = "expired"
    REVOKED = "revoked"


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; a hostile payload must not crash the dead-letter sink.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (use DeadLetter.from_raw)")
    return value


DetailText = Annotated[str, StringConstraints(max_length=MAX_DEAD_LETTER_DETAIL)]
PayloadText = Annotated[str, StringConstraints(max_length=MAX_DEAD_LETTER_PAYLOAD)]


class DeadLetter(Record):
    """A rejected usage event: the reason code, a readable detail, and the raw payload.

    `payload` is the message as received, decoded as UTF-8 with replacement characters and cut
    to `MAX_DEAD_LETTER_PAYLOAD` characters (`payload_truncated` then says so). `usage_id` and
    `source` are set when the event parsed far enough to know them.
    """

    reason: RejectReason
    detail: DetailText
    payload: PayloadText
    payload_truncated: StrictBool = False
    usage_id: EventId | None = None
    source: SourceRef | None = None
    received_at: UtcDatetime

    @model_validator(mode="after")
    def _storable(self) -> DeadLetter:
        _no_nul(self.detail)
        _no_nul(self.payload)
        return self

    @classmethod
    def from_raw(
        cls,
        raw: bytes | str,
        *,
        reason: RejectReason,
        detail: str,
        received_at: datetime,
        usage_id: str | None = None,
        source: str | None = None,
    ) -> DeadLetter:
        """A dead letter for any received bytes, however hostile: decoded, cleaned, capped."""
        data = raw.encode("utf-8", errors="replace") if isinstance(raw, str) else raw
        text = data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        truncated = len(text) > MAX_DEAD_LETTER_PAYLOAD
        detail = detail.replace("\x00", "\ufffd")
        if len(detail) > MAX_DEAD_LETTER_DETAIL:
            detail = detail[: MAX_DEAD_LETTER_DETAIL - 3] + "..."
        return cls(
            reason=reason,
            detail=detail,
            payload=text[:MAX_DEAD_LETTER_PAYLOAD],
            payload_truncated=truncated,
            usage_id=usage_id,
            source=source,
            received_at=received_at,
        )
