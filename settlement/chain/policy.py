"""RoyaltyPolicy: the per-model split between operator, treasury and contributors."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import TxReceipt

from settlement.chain.base import BoundContract
from settlement.chain.errors import DeploymentConfigError

#: The basis-point total every split sums to.
TOTAL_BPS = 10_000


@dataclass(frozen=True)
class Split:
    """Shares in basis points; they sum to 10000."""

    operator_bps: int
    treasury_bps: int
    contributors_bps: int

    def check(self) -> Split:
        """Return self, or raise if the shares do not sum to 10000 (the contract would revert)."""
        if self.operator_bps + self.treasury_bps + self.contributors_bps != TOTAL_BPS:
            raise DeploymentConfigError(f"split {self} does not sum to {TOTAL_BPS} bps")
        return self


class RoyaltyPolicy(BoundContract):
    """Typed wrapper of `RoyaltyPolicy.sol` (owned by governance)."""

    artifact_name = "RoyaltyPolicy"

    def policy_of(self, model_id: int) -> Split:
        """The split in force for the model (its own, else the default of model 0)."""
        operator_bps, treasury_bps, contributors_bps, _ = self._call("policyOf", model_id)
        return Split(operator_bps, treasury_bps, contributors_bps)

    def has_own_policy(self, model_id: int) -> bool:
        """Whether the model has its own split."""
        return bool(self._call("hasOwnPolicy", model_id))

    def treasury(self) -> ChecksumAddress:
        """Where the treasury share goes."""
        return Web3.to_checksum_address(self._call("treasury"))

    def owner(self) -> ChecksumAddress:
        """The governance address (the timelock) that alone may change policies."""
        return Web3.to_checksum_address(self._call("owner"))

    def encode_set_policy(self, model_id: int, split: Split) -> bytes:
        """Calldata of `setPolicy`, for a governance proposal."""
        return self.encode(
            "setPolicy", model_id, split.operator_bps, split.treasury_bps, split.contributors_bps
        )

    def set_policy(self, sender: LocalAccount, model_id: int, split: Split) -> TxReceipt:
        """Call `setPolicy` directly: succeeds only when `sender` is the owner."""
        return self._send(
            sender,
            "setPolicy",
            model_id,
            split.operator_bps,
            split.treasury_bps,
            split.contributors_bps,
        )
