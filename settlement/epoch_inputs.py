"""An epoch's inputs, read from the database: interval groups, carries in and the usage root.

`load_epoch_inputs` reads, through the caller's connection (the settler calls it in the
transaction that has just set `accruals.settled_epoch`):

- the accruals billed by the epoch (`settled_epoch == epoch`), summed per model and state
  interval by a SQL GROUP BY;
- for each group, the stakes and the treasury in force at the interval, from the finalized
  projections (`indexer.asof.ChainState` at `AsOf.at_block(state_block)`, cached per
  (model, block));
- the carries in: each account's `carry_e6` in its `recipient_carries` row of greatest epoch
  below this one (zero carries are left out: a zero carry is no carry);
- the usage root of the billed usage records (`settlement.usage_root`).

`EpochInputs.inputs_hash()` is keccak256 of a canonical ABI encoding of all of it, specified in
docs/settlement.md, so anyone can recompute it from public data (see `settlement.verify`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from indexer.asof import AsOf, ChainState
from schemas.evm import parse_address
from schemas.tables import metadata
from settlement.distribution import IntervalGroup
from settlement.errors import InvalidInputError, InvariantViolation
from settlement.keccak import keccak256
from settlement.usage_root import epoch_usage_root

#: Version tag, the first word of the inputs encoding: keccak256("royalty.epoch-inputs.v1").
INPUTS_TAG = keccak256(b"royalty.epoch-inputs.v1")

#: The ABI type of the encoding `inputs_hash` hashes (see docs/settlement.md).
INPUTS_ABI_TYPES = (
    "bytes32",  # INPUTS_TAG
    "uint256",  # chain id
    "address",  # distributor
    "uint256",  # epoch
    "bytes32",  # usage root
    "uint256",  # usage count
    # groups, sorted by (model id, state block, state log index):
    "(uint256,uint256,uint256,uint256,uint256,address,address,uint256,uint256,uint256,"
    "(address,uint256)[])[]",
    "(address,uint256)[]",  # carries in, sorted by address, zero carries left out
)

# Above this, a SQLite integer SUM could overflow: such groups are summed in Python.
_SQLITE_SUM_LIMIT = 2**63 - 1

_t = metadata.tables


@dataclass(frozen=True)
class EpochInputs:
    """Everything an epoch's distribution is computed from."""

    chain_id: int
    distributor: str
    """RoyaltyDistributor address (checksummed)."""
    epoch: int
    groups: tuple[IntervalGroup, ...]
    """Sorted by (model_id, state_block, state_log_index)."""
    carries_in: dict[str, int]
    usage_root: bytes
    usage_count: int

    def inputs_hash(self) -> bytes:
        """keccak256 of `encode_inputs(self)`."""
        return keccak256(encode_inputs(self))

    @property
    def fees_e6(self) -> int:
        """Sum of the group fees."""
        return sum(group.fee_e6 for group in self.groups)

    @property
    def accrual_count(self) -> int:
        """Accruals billed, over the groups."""
        return sum(group.accrual_count for group in self.groups)


# --- the canonical encoding --------------------------------------------------------------------


def _word(value: int) -> bytes:
    if type(value) is not int or not 0 <= value < 2**256:
        raise InvalidInputError(f"not a uint256: {value!r}")
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    try:
        return bytes(12) + bytes.fromhex(parse_address(address)[2:])
    except ValueError as exc:
        raise InvalidInputError(f"invalid address {address!r}: {exc}") from exc


def _bytes32(value: bytes) -> bytes:
    if len(value) != 32:
        raise InvalidInputError(f"expected 32 bytes, got {len(value)}")
    return bytes(value)


def _pairs(values: Mapping[str, int]) -> bytes:
    """A `(address,uint256)[]` of the non-zero entries, sorted by address bytes, length first.

    Keys are lowercase addresses (or any case of one, checked), so sorting the lowercase hex
    sorts the bytes.
    """
    entries = sorted((key.lower(), value) for key, value in values.items() if value != 0)
    if len({key for key, _ in entries}) != len(entries):
        raise InvalidInputError("an address appears twice (in different letter case)")
    parts = [_word(len(entries))]
    for key, value in entries:
        parts.append(_lowercase_address_word(key))
        parts.append(_word(value))
    return b"".join(parts)


def _lowercase_address_word(key: str) -> bytes:
    """The ABI word of a lowercase address (any other form through parse_address)."""
    if len(key) == 42 and key.startswith("0x"):
        try:
            raw = bytes.fromhex(key[2:])
        except ValueError:
            raw = b""
        if len(raw) == 20:
            return bytes(12) + raw
    return _address_word(key)


def _group(group: IntervalGroup) -> bytes:
    head = [
        _word(group.model_id),
        _word(group.state_block),
        _word(group.state_log_index),
        _word(group.fee_e6),
        _word(group.accrual_count),
        _address_word(group.operator),
        _address_word(group.treasury),
        _word(group.operator_bps),
        _word(group.treasury_bps),
        _word(group.contributors_bps),
        _word(11 * 32),  # offset of the stakes array from the start of this tuple
    ]
    return b"".join(head) + _pairs(group.stakes)


def _dynamic_array(items: Sequence[bytes]) -> bytes:
    """An array of dynamic tuples: length, the offsets of the items, the items."""
    offsets: list[bytes] = []
    position = 32 * len(items)
    for item in items:
        offsets.append(_word(position))
        position += len(item)
    return _word(len(items)) + b"".join(offsets) + b"".join(items)


def encode_inputs(inputs: EpochInputs) -> bytes:
    """`abi.encode(INPUTS_ABI_TYPES, ...)` of the inputs: what `inputs_hash` hashes.

    Groups in (model id, state block, state log index) order (ties, which a correct load never
    has, by their encoding), stakes and carries sorted by address with zeros left out.
    """
    # Big-endian words compare as numbers: byte order is (model, block, log index) order.
    groups = sorted(_group(group) for group in inputs.groups)
    groups_encoded = _dynamic_array(groups)
    carries_encoded = _pairs(inputs.carries_in)
    head_size = 8 * 32
    head = [
        _bytes32(INPUTS_TAG),
        _word(inputs.chain_id),
        _address_word(inputs.distributor),
        _word(inputs.epoch),
        _bytes32(inputs.usage_root),
        _word(inputs.usage_count),
        _word(head_size),
        _word(head_size + len(groups_encoded)),
    ]
    return b"".join(head) + groups_encoded + carries_encoded


# --- database reads ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """Accruals of one model and state interval summed, before the chain state is attached."""

    model_id: int
    state_block: int
    state_log_index: int
    operator: str
    operator_bps: int
    treasury_bps: int
    contributors_bps: int
    fee_e6: int
    accrual_count: int


def load_epoch_inputs(
    connection: Connection, *, chain_id: int, distributor: str, epoch: int
) -> EpochInputs:
    """The inputs of `epoch`: its billed accruals grouped, the chain state, carries, usage root.

    Raises InvariantViolation when accruals of one model and state interval disagree on the
    operator or the policy (the join derives both from the interval), or when the chain state
    of a group is missing from the finalized projections (no treasury).
    """
    totals = group_accruals(connection, epoch)
    root, count = epoch_usage_root(connection, epoch)
    if count != sum(total.accrual_count for total in totals):
        raise InvariantViolation(f"epoch {epoch}: accruals changed while being read")
    return EpochInputs(
        chain_id=chain_id,
        distributor=parse_address(distributor),
        epoch=epoch,
        groups=attach_chain_state(connection, chain_id, totals),
        carries_in=load_carries_in(connection, epoch),
        usage_root=root,
        usage_count=count,
    )


def group_accruals(connection: Connection, epoch: int) -> list[GroupTotals]:
    """The accruals of `epoch` summed per (model, state interval), in that order, in SQL."""
    a = _t["accruals"].c
    keys = (
        a.model_id,
        a.state_block_number,
        a.state_log_index,
        a.operator,
        a.operator_bps,
        a.treasury_bps,
        a.contributors_bps,
    )
    sqlite = connection.dialect.name == "sqlite"
    # Uint256 is NUMERIC on PostgreSQL (exact SUM) and a padded string on SQLite: there the
    # sum is of the integer casts, exact while it stays below 2^63 (checked with the max).
    fee_sum = sa.func.sum(sa.cast(a.fee_e6, sa.BigInteger)) if sqlite else sa.func.sum(a.fee_e6)
    query = (
        sa.select(*keys, sa.func.count(), fee_sum, sa.func.max(a.fee_e6))
        .where(a.settled_epoch == epoch)
        .group_by(*keys)
        .order_by(a.model_id, a.state_block_number, a.state_log_index)
    )
    totals: list[GroupTotals] = []
    for row in connection.execute(query):
        model_id, block, log_index, operator, op_bps, tr_bps, co_bps, count, fees, top = row
        count = int(count)
        if sqlite and int(top) * count > _SQLITE_SUM_LIMIT:
            fees = _python_fee_sum(connection, epoch, int(model_id), int(block), int(log_index))
        totals.append(
            GroupTotals(
                model_id=int(model_id),
                state_block=int(block),
                state_log_index=int(log_index),
                operator=str(operator).lower(),
                operator_bps=int(op_bps),
                treasury_bps=int(tr_bps),
                contributors_bps=int(co_bps),
                fee_e6=int(fees),
                accrual_count=count,
            )
        )
    positions = [(t.model_id, t.state_block, t.state_log_index) for t in totals]
    if len(set(positions)) != len(positions):
        raise InvariantViolation(
            f"epoch {epoch}: accruals of one state interval disagree on the operator or policy"
        )
    return totals


def _python_fee_sum(
    connection: Connection, epoch: int, model_id: int, block: int, log_index: int
) -> int:
    a = _t["accruals"].c
    query = sa.select(a.fee_e6).where(
        a.settled_epoch == epoch,
        a.model_id == model_id,
        a.state_block_number == block,
        a.state_log_index == log_index,
    )
    return sum(int(fee) for fee in connection.execute(query).scalars())


def attach_chain_state(
    connection: Connection, chain_id: int, totals: Iterable[GroupTotals]
) -> tuple[IntervalGroup, ...]:
    """`IntervalGroup`s of the totals: stakes and treasury at each interval's block, from the
    finalized projections."""
    kept = list(totals)
    state = ChainState(connection, chain_id)
    watermark = state.watermark()
    finalized = -1 if watermark is None else watermark.block_number
    blocks_of: dict[int, set[int]] = {}
    for total in kept:
        blocks_of.setdefault(total.model_id, set()).add(total.state_block)
    stakes_at = {
        (model_id, block): stakes
        for model_id, blocks in blocks_of.items()
        for block, stakes in stakes_at_blocks(
            connection, chain_id, model_id, blocks, finalized
        ).items()
    }
    treasury_at: dict[int, str] = {}
    groups: list[IntervalGroup] = []
    for total in kept:
        if total.state_block not in treasury_at:
            treasury = state.treasury(AsOf.at_block(total.state_block))
            if treasury is None:
                raise InvariantViolation(
                    f"no finalized treasury at block {total.state_block} (model "
                    f"{total.model_id}): is the chain indexed that far?"
                )
            treasury_at[total.state_block] = treasury.lower()
        groups.append(
            IntervalGroup(
                model_id=total.model_id,
                state_block=total.state_block,
                state_log_index=total.state_log_index,
                fee_e6=total.fee_e6,
                accrual_count=total.accrual_count,
                operator=total.operator,
                treasury=treasury_at[total.state_block],
                operator_bps=total.operator_bps,
                treasury_bps=total.treasury_bps,
                contributors_bps=total.contributors_bps,
                stakes=stakes_at[(total.model_id, total.state_block)],
            )
        )
    groups.sort(key=lambda group: group.sort_key)
    return tuple(groups)


def stakes_at_blocks(
    connection: Connection,
    chain_id: int,
    model_id: int,
    blocks: Iterable[int],
    finalized_block: int,
) -> dict[int, dict[str, int]]:
    """The non-zero stakes (lowercase staker → stake) on `model_id` after each block.

    The same answer as `ChainState(connection, chain_id).stakes(model_id, AsOf.at_block(b))`
    (finalized rows only) for every b, from one ordered scan of the model's stake history
    instead of one scan per block: with 10^5 stakers and a few intervals that is the
    difference between seconds and minutes.
    """
    wanted = sorted(set(blocks))
    if not wanted:
        return {}
    table = _t["chain_stakes"]
    stake_after = sa.type_coerce(
        table.c.stake_after,
        sa.String() if connection.dialect.name == "sqlite" else sa.Numeric(78, 0),
    )
    query = (
        sa.select(table.c.block_number, table.c.staker, stake_after)
        .where(
            table.c.chain_id == chain_id,
            table.c.model_id == model_id,
            table.c.block_number <= min(wanted[-1], finalized_block),
        )
        .order_by(table.c.block_number, table.c.log_index)
    )
    rows = iter(connection.execute(query.execution_options(yield_per=50_000)))
    current: dict[str, int] = {}
    result: dict[int, dict[str, int]] = {}
    pending = next(rows, None)
    for block in wanted:
        while pending is not None and pending[0] <= block:
            current[str(pending[1]).lower()] = int(pending[2])
            pending = next(rows, None)
        result[block] = {staker: stake for staker, stake in current.items() if stake > 0}
    return result


def load_carries_in(connection: Connection, epoch: int) -> dict[str, int]:
    """Each account's carry after its latest epoch before `epoch` (non-zero ones only)."""
    carries = _t["recipient_carries"]
    latest = (
        sa.select(carries.c.account, sa.func.max(carries.c.epoch_id).label("epoch_id"))
        .where(carries.c.epoch_id < epoch)
        .group_by(carries.c.account)
        .subquery()
    )
    query = sa.select(carries.c.account, carries.c.carry_e6).join(
        latest,
        sa.and_(carries.c.account == latest.c.account, carries.c.epoch_id == latest.c.epoch_id),
    )
    result: dict[str, int] = {}
    for account, carry in connection.execute(query):
        if int(carry) > 0:
            result[str(account).lower()] = int(carry)
    return dict(sorted(result.items()))


def inputs_summary(inputs: EpochInputs) -> dict[str, Any]:
    """A short description of the inputs, for logs and reports."""
    return {
        "epoch": inputs.epoch,
        "groups": len(inputs.groups),
        "accruals": inputs.accrual_count,
        "fees_e6": str(inputs.fees_e6),
        "carries_in": len(inputs.carries_in),
        "usage_count": inputs.usage_count,
        "usage_root": "0x" + inputs.usage_root.hex(),
        "inputs_hash": "0x" + inputs.inputs_hash().hex(),
    }
