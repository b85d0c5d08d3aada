"""Staking: contributors' stakes per model."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import TxReceipt

from settlement.chain.base import BoundContract


@dataclass(frozen=True)
class PendingWithdrawal:
    """Unstaked tokens waiting for the cooldown."""

    amount: int
    release_at: int


class Staking(BoundContract):
    """Typed wrapper of `Staking.sol`."""

    artifact_name = "Staking"

    def stake(self, sender: LocalAccount, model_id: int, amount: int) -> TxReceipt:
        """Stake `amount` on the model (after approving it on the stake token)."""
        return self._send(sender, "stake", model_id, amount)

    def unstake(self, sender: LocalAccount, model_id: int, amount: int) -> TxReceipt:
        """Unstake `amount`: it stops counting now; tokens return now or after the cooldown."""
        return self._send(sender, "unstake", model_id, amount)

    def withdraw(self, sender: LocalAccount, model_id: int) -> TxReceipt:
        """Withdraw unstaked tokens whose cooldown has passed."""
        return self._send(sender, "withdraw", model_id)

    def stake_of(self, model_id: int, staker: str) -> int:
        """The staker's stake on the model."""
        return int(self._call("stakeOf", model_id, staker))

    def total_staked(self, model_id: int) -> int:
        """The model's total stake."""
        return int(self._call("totalStaked", model_id))

    def pending_withdrawal(self, model_id: int, staker: str) -> PendingWithdrawal:
        """What the staker unstaked and has not withdrawn yet."""
        amount, release_at = self._call("pendingWithdrawal", model_id, staker)
        return PendingWithdrawal(amount, release_at)

    def cooldown_s(self) -> int:
        """Seconds between unstake and withdraw."""
        return int(self._call("cooldown"))

    def stake_token(self) -> ChecksumAddress:
        """The staked ERC-20."""
        return Web3.to_checksum_address(self._call("stakeToken"))
