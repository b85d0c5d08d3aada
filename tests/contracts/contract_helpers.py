"""Helpers of the contract tests: actors, the chain harness, and epoch distributions.

A module of its own (not conftest) so test modules can import the types.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from deploy.local import Anvil
from settlement.chain import (
    ChainClient,
    Claim,
    ContractRevertError,
    DeploymentConfig,
    System,
    deploy_system,
    dev_account,
)
from settlement.chain.base import BoundContract
from settlement.chain.reverts import to_revert_error
from settlement.chain.tokens import MintableToken
from settlement.merkle import MerkleTree

LEAF_ENCODING = ("uint256", "address", "uint256")
DAY = 86_400

#: The deployment used by the tests: real contracts, short governance periods.
TEST_CONFIG = {
    "voting_delay_blocks": 1,
    "voting_period_blocks": 5,
    "timelock_delay_s": 60,
    "dispute_window_s": 3_600,
    "sweep_delay_s": 30 * DAY,
    "stake_cooldown_s": DAY,
}


@dataclass(frozen=True)
class Actors:
    """Who is who among anvil's development accounts."""

    deployer: LocalAccount
    settler: LocalAccount
    guardian: LocalAccount
    treasury: LocalAccount
    operator: LocalAccount
    alice: LocalAccount
    bob: LocalAccount
    carol: LocalAccount
    mallory: LocalAccount


def dev_actors() -> Actors:
    """The actors, from anvil's development accounts in field order."""
    return Actors(*(dev_account(i) for i in range(len(Actors.__dataclass_fields__))))


def connect_fast(rpc_url: str) -> ChainClient:
    """A client polling receipts every 5 ms (anvil mines at once)."""
    client = ChainClient.connect(rpc_url)
    client.poll_latency_s = 0.005
    return client


def deploy_test_system(client: ChainClient, actors: Actors) -> System:
    """The whole system deployed with `TEST_CONFIG` (short governance periods)."""
    config = DeploymentConfig(
        settler=actors.settler.address,
        guardian=actors.guardian.address,
        treasury=actors.treasury.address,
        **TEST_CONFIG,  # type: ignore[arg-type]
    )
    return System.connect(client, deploy_system(client, actors.deployer, config))


@dataclass
class ChainHarness:
    """The chain of one test: client, accounts, and anvil's time and identity controls."""

    anvil: Anvil
    client: ChainClient
    actors: Actors

    @property
    def w3(self) -> Web3:
        return self.client.w3

    def now(self) -> int:
        """Timestamp of the latest block."""
        return self.client.latest_timestamp()

    def advance_time(self, seconds: int) -> int:
        """Mine one block `seconds` after the latest one; returns its timestamp."""
        target = self.now() + seconds
        self.anvil.rpc("evm_setNextBlockTimestamp", [target])
        self.anvil.rpc("evm_mine")
        return target

    def next_block_at(self, timestamp: int) -> None:
        """Give the next block (e.g. of the next transaction) this exact timestamp."""
        self.anvil.rpc("evm_setNextBlockTimestamp", [timestamp])

    def send_at(
        self, timestamp: int, target: BoundContract, sender: LocalAccount, fn_name: str, *args: Any
    ) -> TxReceipt:
        """Send a transaction mined in a block of exactly `timestamp`.

        Gas is given, not estimated: estimation runs on the latest block's time, not on the
        time the transaction will be mined at.
        """
        self.next_block_at(timestamp)
        receipt = self.client.transact(target.contract, fn_name, args, sender, gas=1_000_000)
        block = self.w3.eth.get_block(receipt["blockNumber"])
        assert block["timestamp"] == timestamp
        return receipt

    @contextmanager
    def rewind(self) -> Iterator[None]:
        """Undo on exit whatever the block did to the chain (a nested snapshot)."""
        snapshot = self.anvil.rpc("evm_snapshot")
        try:
            yield
        finally:
            assert self.anvil.rpc("evm_revert", [snapshot]) is True

    def mine(self, blocks: int) -> None:
        """Mine `blocks` empty blocks."""
        self.anvil.rpc("anvil_mine", [hex(blocks)])

    def send_as(self, address: str, target: BoundContract, fn_name: str, *args: Any) -> TxReceipt:
        """Send a transaction from any address (anvil impersonation), e.g. from the timelock."""
        address = Web3.to_checksum_address(address)
        self.anvil.rpc("anvil_impersonateAccount", [address])
        self.anvil.rpc("anvil_setBalance", [address, hex(10**20)])
        try:
            data = target.contract.encode_abi(fn_name, args=list(args))
            tx = {"from": address, "to": target.address, "data": data}
            try:
                tx_hash = self.w3.eth.send_transaction(tx)  # type: ignore[arg-type]
            except ContractLogicError as exc:
                raise to_revert_error(exc, fn_name) from exc
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
            assert receipt["status"] == 1
            return receipt
        finally:
            self.anvil.rpc("anvil_stopImpersonatingAccount", [address])


@dataclass(frozen=True)
class Distribution:
    """An epoch's payouts as a StandardMerkleTree of (index, account, amount) leaves."""

    leaves: tuple[tuple[int, str, int], ...]
    tree: MerkleTree

    @classmethod
    def of(cls, payouts: Sequence[tuple[str, int]], first_index: int = 0) -> Distribution:
        leaves = tuple(
            (first_index + i, Web3.to_checksum_address(a), amount)
            for i, (a, amount) in enumerate(payouts)
        )
        return cls(leaves, MerkleTree.of(leaves, LEAF_ENCODING))

    @property
    def root(self) -> bytes:
        return self.tree.root_bytes

    @property
    def total(self) -> int:
        return sum(amount for _, _, amount in self.leaves)

    def claim(self, epoch: int, position: int) -> Claim:
        index, account, amount = self.leaves[position]
        proof = tuple(bytes.fromhex(p[2:]) for p in self.tree.proof(position))
        return Claim(epoch, index, account, amount, proof)


class MisbehavingToken(MintableToken):
    """Test-only ERC-20 whose transfers can return false, revert, or return nothing."""

    artifact_name = "MisbehavingERC20"
    NORMAL, RETURN_FALSE, REVERT, NO_RETURN = range(4)

    def set_mode(self, sender: LocalAccount, mode: int) -> TxReceipt:
        return self._send(sender, "setMode", mode)


class FeeOnTransferToken(MintableToken):
    """Test-only ERC-20 that burns 1% of every transfer."""

    artifact_name = "FeeOnTransferERC20"


class ReentrantToken(MintableToken):
    """Test-only hostile ERC-20 that calls back into a target during a transfer."""

    artifact_name = "ReentrantERC20"

    def arm(self, sender: LocalAccount, target: str, payload: bytes) -> TxReceipt:
        return self._send(sender, "arm", target, payload)

    def attempted(self) -> bool:
        return bool(self._call("attempted"))

    def reentry_succeeded(self) -> bool:
        return bool(self._call("reentrySucceeded"))

    def reentry_return_data(self) -> bytes:
        return bytes(self._call("reentryReturnData"))


@contextmanager
def reverts(error_name: str) -> Iterator[pytest.ExceptionInfo[ContractRevertError]]:
    """Expect a `ContractRevertError` whose decoded Solidity error is `error_name`."""
    with pytest.raises(ContractRevertError) as info:
        yield info
    assert info.value.error_name == error_name, f"expected {error_name}, got {info.value}"
