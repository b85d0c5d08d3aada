"""Exact integer money splits: largest remainder, the royalty policy split, and carries.

Every function here conserves its input exactly (the sum of the parts is the whole), uses only
`int` arithmetic (no float, no Decimal) and is deterministic: the result depends on the values,
never on the order of a mapping. Amounts are in 10^-6 token base units unless named otherwise.

Recipients are addresses as `schemas.evm.parse_address` accepts them (0x + 40 hex digits in one
letter case, or mixed case with a valid EIP-55 checksum). Recipients with zero weight are always
*included* with 0, so a split's keys are exactly its input's keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from schemas.evm import parse_address
from settlement.errors import InvalidInputError, InvariantViolation

#: Prices and fees carry a 10^6 scale: one base unit is E6 fee units.
E6 = 1_000_000

#: Policy shares are basis points of the fee; they sum to this.
BPS_DENOMINATOR = 10_000

# Tie-break ranks of the policy roles: operator, then treasury, then contributors.
_ROLE_RANKS = (b"\x00", b"\x01", b"\x02")


def split_largest_remainder(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split `total` pro rata to integer `weights` by the largest remainder method.

    Each recipient first gets floor(total * w / sum(w)); the units left over (fewer than the
    number of recipients) go one each to the largest remainders, ties broken by the lower
    address (compared as 20-byte values, so letter case does not matter). Hence every share is
    within one unit of its exact rational share and the shares sum to `total` exactly.

    Returns a dict with exactly the keys of `weights` (zero weights get 0). Raises
    InvalidInputError for a negative total or weight, a non-int, a malformed or duplicate
    address (in any letter case), or weights that are all zero (or absent).
    """
    _check_non_negative(total, "total")
    recipients = list(weights)
    ranks = [_address_bytes(recipient) for recipient in recipients]
    if len(set(ranks)) != len(ranks):
        raise InvalidInputError("a recipient appears twice (in different letter case)")
    shares = _largest_remainder(total, [weights[r] for r in recipients], ranks)
    return dict(zip(recipients, shares, strict=True))


@dataclass(frozen=True, slots=True)
class PolicySplit:
    """One fee split under a royalty policy, in 10^-6 base units.

    `contributors_e6` maps each staker to its share (zero stakes included with 0). When nobody
    stakes, it is empty and the contributors' share is part of `treasury_e6`.
    """

    operator: str
    treasury: str
    operator_e6: int
    treasury_e6: int
    contributors_e6: Mapping[str, int]

    @property
    def total_e6(self) -> int:
        """The split fee: the sum of every part."""
        return self.operator_e6 + self.treasury_e6 + sum(self.contributors_e6.values())

    def allocations(self) -> dict[str, int]:
        """Units per recipient, keyed by lowercase address; one key per distinct address.

        The operator or the treasury may also stake, or be the same address: their parts add.
        """
        merged: dict[str, int] = {}
        parts = [(self.operator, self.operator_e6), (self.treasury, self.treasury_e6)]
        for address, units in [*parts, *self.contributors_e6.items()]:
            key = _lowercase(address)
            merged[key] = merged.get(key, 0) + units
        return merged


def split_policy(
    fee_e6: int,
    operator_bps: int,
    treasury_bps: int,
    contributors_bps: int,
    *,
    operator: str,
    treasury: str,
    stakes: Mapping[str, int],
) -> PolicySplit:
    """Split a fee (10^-6 units) between operator, treasury and stakers, as DESIGN.md says.

    First the fee is split by the three basis-point shares (summing to 10000) with the largest
    remainder method; ties between equal remainders go first to the operator, then the
    treasury, then the contributors (a fixed order: the contributors' pool has no address).
    Then the contributors' share is split pro rata to `stakes` by `split_largest_remainder`;
    with no stake at all (empty or all zero) it goes to the treasury instead.

    Raises InvalidInputError for a negative fee, bps that are negative or do not sum to 10000,
    malformed addresses, or negative stakes.
    """
    _check_non_negative(fee_e6, "fee_e6")
    bps = [operator_bps, treasury_bps, contributors_bps]
    for share in bps:
        _check_non_negative(share, "bps")
    if sum(bps) != BPS_DENOMINATOR:
        raise InvalidInputError(f"policy bps must sum to {BPS_DENOMINATOR}, got {bps}")
    _address_bytes(operator)
    _address_bytes(treasury)
    operator_e6, treasury_e6, contributors_e6 = _largest_remainder(fee_e6, bps, _ROLE_RANKS)
    for stake in stakes.values():
        _check_non_negative(stake, "stake")
    if not any(stakes.values()):
        nobody: Mapping[str, int] = MappingProxyType({})
        return PolicySplit(operator, treasury, operator_e6, treasury_e6 + contributors_e6, nobody)
    shares = split_largest_remainder(contributors_e6, stakes)
    return PolicySplit(operator, treasury, operator_e6, treasury_e6, MappingProxyType(shares))


class CarryResult(NamedTuple):
    """Whole base units to pay now, and the 10^-6 units each recipient carries forward."""

    amounts: dict[str, int]
    carries_e6: dict[str, int]


def apply_carry(units_e6: Mapping[str, int], carries_e6: Mapping[str, int]) -> CarryResult:
    """Turn an epoch's summed 10^-6 units plus previous carries into payable base units.

    For each recipient: amount = (units + carry) // 10^6 and new carry = (units + carry) % 10^6,
    so nothing is lost or created: sum(units) + sum(carries) = 10^6 * sum(amounts) +
    sum(new carries). Keys are lowercase addresses; every recipient of either input appears in
    both outputs (with 0 where nothing is due). Raises InvalidInputError for negative units, a
    carry outside [0, 10^6), or an address given twice in one mapping.
    """
    units = _by_lowercase_address(units_e6, "units_e6")
    carries = _by_lowercase_address(carries_e6, "carries_e6")
    if any(carry >= E6 for carry in carries.values()):
        raise InvalidInputError(f"a carry is a remainder, below {E6}")
    amounts: dict[str, int] = {}
    new_carries: dict[str, int] = {}
    for recipient in sorted(units.keys() | carries.keys()):
        amounts[recipient], new_carries[recipient] = divmod(
            units.get(recipient, 0) + carries.get(recipient, 0), E6
        )
    return CarryResult(amounts, new_carries)


def _largest_remainder(total: int, weights: Sequence[int], ranks: Sequence[bytes]) -> list[int]:
    """The largest remainder split of `total`; equal remainders favour the lower rank."""
    for weight in weights:
        _check_non_negative(weight, "weight")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise InvalidInputError("cannot split: every weight is zero (or there is none)")
    shares: list[int] = []
    remainders: list[int] = []
    for weight in weights:
        share, remainder = divmod(total * weight, weight_sum)
        shares.append(share)
        remainders.append(remainder)
    leftover = total - sum(shares)
    # Ranks are distinct, so this is a total order: no dependence on input order.
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], ranks[i]))
    for i in order[:leftover]:
        shares[i] += 1
    if sum(shares) != total or not 0 <= leftover < len(weights):
        raise InvariantViolation(f"largest remainder split of {total} lost units: {shares}")
    return shares


def _check_non_negative(value: object, name: str) -> int:
    # type() rather than isinstance(): a bool is an int but never an amount.
    if type(value) is not int or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _address_bytes(address: object) -> bytes:
    """The 20 bytes of an address (the tie-break order and identity, whatever its letter case)."""
    return bytes.fromhex(_checksummed(address)[2:])


def _lowercase(address: object) -> str:
    return _checksummed(address).lower()


def _checksummed(address: object) -> str:
    try:
        return parse_address(address)
    except ValueError as exc:
        raise InvalidInputError(f"invalid address {address!r}: {exc}") from exc


def _by_lowercase_address(values: Mapping[str, int], name: str) -> dict[str, int]:
    result: dict[str, int] = {}
    for address, value in values.items():
        key = _lowercase(address)
        if key in result:
            raise InvalidInputError(f"{name}: {address} appears twice (in different letter case)")
        result[key] = _check_non_negative(value, name)
    return result
