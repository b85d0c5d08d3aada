"""RoyaltyDistributor: funded per-epoch Merkle roots, disputes, claims and sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import TxReceipt

from settlement.chain.base import BoundContract

#: keccak256("SETTLER_ROLE") and keccak256("GUARDIAN_ROLE"), as the contract defines them.
SETTLER_ROLE = Web3.keccak(text="SETTLER_ROLE")
GUARDIAN_ROLE = Web3.keccak(text="GUARDIAN_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32


class EpochStatus(IntEnum):
    """`RoyaltyDistributor.EpochStatus`."""

    NONE = 0
    COMMITTED = 1
    DISPUTED = 2
    SWEPT = 3


@dataclass(frozen=True)
class EpochInfo:
    """An epoch as the contract knows it."""

    root: bytes
    funder: ChecksumAddress
    total: int
    claimed: int
    claimable_at: int
    status: EpochStatus


@dataclass(frozen=True)
class Claim:
    """One leaf `(index, account, amount)` of an epoch, with its proof (32-byte nodes)."""

    epoch: int
    index: int
    account: str
    amount: int
    proof: tuple[bytes, ...]

    def as_tuple(self) -> tuple[int, int, str, int, list[bytes]]:
        """The `Claim` struct as the ABI encoder takes it."""
        account = Web3.to_checksum_address(self.account)
        return (self.epoch, self.index, account, self.amount, list(self.proof))


class RoyaltyDistributor(BoundContract):
    """Typed wrapper of `RoyaltyDistributor.sol`."""

    artifact_name = "RoyaltyDistributor"

    def commit_epoch(
        self,
        sender: LocalAccount,
        epoch: int,
        merkle_root: bytes,
        total: int,
        inputs_hash: bytes,
        usage_root: bytes,
    ) -> TxReceipt:
        """Commit and fund an epoch (settler only; approve `total` on the token first)."""
        return self._send(sender, "commitEpoch", epoch, merkle_root, total, inputs_hash, usage_root)

    def claim(self, sender: LocalAccount, claim: Claim) -> TxReceipt:
        """Claim one leaf; the tokens go to `claim.account` whoever sends it."""
        return self._send(sender, "claim", *claim.as_tuple())

    def claim_many(self, sender: LocalAccount, claims: Sequence[Claim]) -> TxReceipt:
        """Claim many leaves in one transaction, all or nothing.

        Sort claims by account: each run of same-account claims is paid with one transfer.
        """
        return self._send(sender, "claimMany", [c.as_tuple() for c in claims])

    def dispute(self, sender: LocalAccount, epoch: int) -> TxReceipt:
        """Dispute an epoch within its window (guardian only); its total returns to the funder."""
        return self._send(sender, "dispute", epoch)

    def pause(self, sender: LocalAccount) -> TxReceipt:
        """Stop commits and claims (guardian only)."""
        return self._send(sender, "pause")

    def unpause(self, sender: LocalAccount) -> TxReceipt:
        """Resume commits and claims (guardian only)."""
        return self._send(sender, "unpause")

    def sweep(self, sender: LocalAccount, epoch: int, to: str) -> TxReceipt:
        """Sweep an expired epoch's remainder: succeeds only for governance (the timelock)."""
        return self._send(sender, "sweep", epoch, to)

    def encode_sweep(self, epoch: int, to: str) -> bytes:
        """Calldata of `sweep`, for a governance proposal."""
        return self.encode("sweep", epoch, Web3.to_checksum_address(to))

    def epoch_info(self, epoch: int) -> EpochInfo:
        """Root, funder, total, claimed, claimable time and status of `epoch`."""
        root, funder, total, claimed, claimable_at, status = self._call("epochInfo", epoch)
        return EpochInfo(
            bytes(root),
            Web3.to_checksum_address(funder),
            total,
            claimed,
            claimable_at,
            EpochStatus(status),
        )

    def is_claimed(self, epoch: int, index: int) -> bool:
        """Whether leaf `index` of `epoch` was claimed."""
        return bool(self._call("isClaimed", epoch, index))

    def leaf_hash(self, index: int, account: str, amount: int) -> bytes:
        """The StandardMerkleTree leaf hash the contract computes for a leaf."""
        return bytes(self._call("leafHash", index, Web3.to_checksum_address(account), amount))

    def paused(self) -> bool:
        """Whether commits and claims are paused."""
        return bool(self._call("paused"))

    def dispute_window_s(self) -> int:
        """Seconds from commit to claimable."""
        return int(self._call("disputeWindow"))

    def sweep_delay_s(self) -> int:
        """Seconds from claimable to sweepable."""
        return int(self._call("sweepDelay"))

    def token(self) -> ChecksumAddress:
        """The payout token."""
        return Web3.to_checksum_address(self._call("token"))

    def has_role(self, role: bytes, account: str) -> bool:
        """Whether `account` holds `role` (see SETTLER_ROLE, GUARDIAN_ROLE, DEFAULT_ADMIN_ROLE)."""
        return bool(self._call("hasRole", role, account))
