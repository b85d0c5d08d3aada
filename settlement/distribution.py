"""An epoch's distribution: interval groups → 10^-6 units → payable amounts, carries and leaves.

This is DESIGN.md "Settlement math" for one epoch:

1. each `IntervalGroup` (every accrual of one model in one state interval, summed) is split
   once: operator / treasury / contributors by the policy's basis points, then the
   contributors' share pro rata to the stakes (nobody staking: it goes to the treasury), both
   by the largest remainder method with ties to the lower address — exactly
   `settlement.split.split_policy`;
2. the units are summed per recipient (lowercase address) over the groups;
3. with the carries of previous epochs, `settlement.split.apply_carry` gives each recipient
   floor((units + carry) / 10^6) base units now and the remainder as its new carry;
4. one Merkle leaf `(index, account, amount)` per recipient with amount > 0, sorted by address
   bytes, indexes 0..n-1, in a tree whose leaf encoding is the one
   `RoyaltyDistributor.leafHash` hashes: `("uint256", "address", "uint256")`.

`settlement.split` is the reference; this module computes the same numbers without its
per-recipient address parsing (addresses are checked in bulk once, then compared as lowercase
hex, whose order is the order of their bytes), so an epoch with 10^5 recipients costs a few
dict operations per recipient per group. The property tests hold it equal to the reference.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from settlement.abi_leaf import parse_addresses
from settlement.errors import InvalidInputError, InvariantViolation
from settlement.merkle import MerkleTree
from settlement.split import BPS_DENOMINATOR, E6

#: The payout leaf encoding: the contract's `leafHash(index, account, amount)`.
LEAF_ENCODING = ("uint256", "address", "uint256")

#: The root of an epoch with no leaf (the settler commits it without a transaction).
ZERO_ROOT = bytes(32)


@dataclass(frozen=True, slots=True)
class IntervalGroup:
    """All accruals of one model in one state interval billed by the epoch, summed."""

    model_id: int
    state_block: int
    """accrual.state_interval (block, log index); (0, 0) = no change yet."""
    state_log_index: int
    fee_e6: int
    """Sum of the accruals' fee_e6."""
    accrual_count: int
    operator: str
    """Lowercase 0x address."""
    treasury: str
    """Treasury in force at the interval (lowercase)."""
    operator_bps: int
    treasury_bps: int
    contributors_bps: int
    stakes: Mapping[str, int]
    """Stake per staker (lowercase) at the interval; zero stakes may be absent."""

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """The order of groups in `EpochInputs`: model, then state interval."""
        return (self.model_id, self.state_block, self.state_log_index)


@dataclass(frozen=True)
class Leaf:
    """One payout leaf: `amount` base units to `account` (EIP-55), at leaf `index`."""

    index: int
    account: str
    amount: int

    def value(self) -> tuple[int, str, int]:
        """The leaf as the tree (and `leafHash`) takes it."""
        return (self.index, self.account, self.amount)


@dataclass(frozen=True)
class EpochDistribution:
    """What an epoch pays: units per recipient, carries, leaves, total and the Merkle tree."""

    epoch: int
    fees_e6: int
    """Sum of the group fees."""
    accrual_count: int
    units_e6: dict[str, int]
    """Summed 10^-6 units per recipient (lowercase)."""
    carries_in: dict[str, int]
    carries_out: dict[str, int]
    """Per recipient, in [0, 10^6); every recipient of units or carries_in."""
    leaves: tuple[Leaf, ...]
    """One per recipient with amount > 0, sorted by address bytes, index 0..n-1."""
    total: int
    """Sum of the leaf amounts (base units): what commitEpoch funds."""
    tree: MerkleTree | None = field(compare=False)
    """The payout tree (leaf encoding `LEAF_ENCODING`); None when there is no leaf."""

    @property
    def root(self) -> bytes:
        """The Merkle root (32 bytes); `ZERO_ROOT` when there is no leaf."""
        return ZERO_ROOT if self.tree is None else self.tree.root_bytes

    def amounts(self) -> dict[str, int]:
        """Base units per recipient with a leaf, keyed by lowercase address."""
        return {leaf.account.lower(): leaf.amount for leaf in self.leaves}

    def proof(self, index: int) -> tuple[str, ...]:
        """The Merkle proof (0x-hex nodes) of leaf `index`."""
        if self.tree is None:
            raise InvalidInputError(f"epoch {self.epoch} has no leaf")
        return self.tree.proof(index)


def compute_distribution(
    epoch: int, groups: Iterable[IntervalGroup], carries_in: Mapping[str, int]
) -> EpochDistribution:
    """The distribution of `epoch` from its interval groups and the carries of earlier epochs.

    Deterministic: the result depends on the groups and carries as a multiset, never on their
    order. Conserves exactly: sum(fee_e6) = sum(units_e6), and sum(units_e6) + sum(carries_in)
    = 10^6 * total + sum(carries_out). Raises InvalidInputError for a negative fee, count or
    stake, bps that do not sum to 10000, a malformed or duplicate address, or a carry outside
    [0, 10^6).
    """
    addresses = _Addresses()
    units: dict[str, int] = {}
    fees = count = 0
    for group in groups:
        fee = _non_negative(group.fee_e6, "fee_e6")
        count += _non_negative(group.accrual_count, "accrual_count")
        fees += fee
        for account, share in _split_group(group, fee, addresses):
            units[account] = units.get(account, 0) + share
    carries = addresses.keyed(carries_in, "carries_in")
    for carry in carries.values():
        if not 0 <= carry < E6:
            raise InvalidInputError(f"a carry is a remainder in [0, {E6}), got {carry}")
    amounts: dict[str, int] = {}
    carries_out: dict[str, int] = {}
    for account in sorted(units.keys() | carries.keys()):
        amounts[account], carries_out[account] = divmod(
            units.get(account, 0) + carries.get(account, 0), E6
        )
    payable = [account for account, amount in amounts.items() if amount > 0]  # sorted
    checksummed = parse_addresses(payable) if payable else []
    leaves = tuple(
        Leaf(index, account, amounts[lower])
        for index, (lower, account) in enumerate(zip(payable, checksummed, strict=True))
    )
    total = sum(leaf.amount for leaf in leaves)
    if sum(units.values()) != fees or E6 * total + sum(carries_out.values()) != fees + sum(
        carries.values()
    ):
        raise InvariantViolation(f"epoch {epoch}: the distribution does not conserve its fees")
    tree = MerkleTree.of([leaf.value() for leaf in leaves], LEAF_ENCODING) if leaves else None
    return EpochDistribution(
        epoch=epoch,
        fees_e6=fees,
        accrual_count=count,
        units_e6=dict(sorted(units.items())),
        carries_in=carries,
        carries_out=carries_out,
        leaves=leaves,
        total=total,
        tree=tree,
    )


def _split_group(group: IntervalGroup, fee: int, addresses: _Addresses) -> list[tuple[str, int]]:
    """`split_policy(...).allocations()` of one group, as (lowercase address, units) pairs.

    Pairs may repeat an address (the operator or treasury also staking): the caller sums them.
    """
    bps = [group.operator_bps, group.treasury_bps, group.contributors_bps]
    for share in bps:
        _non_negative(share, "bps")
    if sum(bps) != BPS_DENOMINATOR:
        raise InvalidInputError(f"policy bps must sum to {BPS_DENOMINATOR}, got {bps}")
    operator = addresses.one(group.operator)
    treasury = addresses.one(group.treasury)
    # Roles in tie-break order: operator, treasury, contributors.
    operator_e6, treasury_e6, contributors_e6 = largest_remainder(fee, bps)
    stakes = addresses.keyed(group.stakes, "stakes")
    stakers = sorted(staker for staker, stake in stakes.items() if stake > 0)
    if not stakers:
        return [(operator, operator_e6), (treasury, treasury_e6 + contributors_e6)]
    shares = largest_remainder(contributors_e6, [stakes[staker] for staker in stakers])
    return [(operator, operator_e6), (treasury, treasury_e6), *zip(stakers, shares, strict=True)]


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` pro rata to `weights` (largest remainder; equal remainders favour the
    earlier weight). With weights in ascending address order that is
    `settlement.split.split_largest_remainder`'s tie-break by lower address."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        raise InvalidInputError("cannot split: every weight is zero (or there is none)")
    shares: list[int] = []
    remainders: list[int] = []
    for weight in weights:
        share, remainder = divmod(total * weight, weight_sum)
        shares.append(share)
        remainders.append(remainder)
    leftover = total - sum(shares)
    if leftover:
        order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
        for i in order[:leftover]:
            shares[i] += 1
    return shares


def _non_negative(value: object, name: str) -> int:
    # type() rather than isinstance(): a bool is an int but never an amount.
    if type(value) is not int or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative int, got {value!r}")
    return value


class _Addresses:
    """Addresses checked once each (in bulk) and mapped to their lowercase form."""

    def __init__(self) -> None:
        self._lower: dict[str, str] = {}

    def _learn(self, values: Sequence[str]) -> None:
        new = [value for value in values if value not in self._lower]
        if new:
            for value, checked in zip(new, parse_addresses(new), strict=True):
                self._lower[value] = checked.lower()

    def one(self, value: str) -> str:
        self._learn([value])
        return self._lower[value]

    def keyed(self, values: Mapping[str, int], name: str) -> dict[str, int]:
        """`values` keyed by lowercase address, each value a non-negative int."""
        keys = list(values)
        self._learn(keys)
        result = {self._lower[key]: _non_negative(values[key], name) for key in keys}
        if len(result) != len(keys):
            raise InvalidInputError(f"{name}: an address appears twice (in different letter case)")
        return result
