"""A web3.py connection that signs locally, sends, and waits for receipts.

All writes go through `ChainClient.send`: build the transaction (nonce from the node's pending
count, EIP-1559 fees from the latest base fee, gas from an estimate plus a margin), sign it
with an `eth_account` key, send the raw bytes and wait for the receipt. A revert, whether at
estimation or on chain, comes back as a decoded `ContractRevertError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.types import TxParams, TxReceipt, Wei

from settlement.chain.artifacts import Artifact, load_artifact
from settlement.chain.errors import (
    ChainUnavailableError,
    ContractRevertError,
    TransactionTimeoutError,
)
from settlement.chain.reverts import decode_revert, revert_data, to_revert_error

#: anvil's (and hardhat's) development chain id: the only chain with default keys.
DEV_CHAIN_ID = 31337

_T = TypeVar("_T")


def dev_account(index: int) -> LocalAccount:
    """Account `index` of anvil's public development mnemonic (local chains only)."""
    from deploy.local.anvil import DEV_MNEMONIC  # the one definition of the dev mnemonic

    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(
        DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


def account_from_key(private_key: str) -> LocalAccount:
    """A signing account from a hex private key."""
    account: LocalAccount = Account.from_key(private_key)
    return account


class ChainClient:
    """One chain endpoint plus the means to send signed transactions to it."""

    def __init__(
        self,
        w3: Web3,
        *,
        gas_margin_pct: int = 20,
        receipt_timeout_s: float = 120.0,
        poll_latency_s: float = 0.02,
    ) -> None:
        self.w3 = w3
        self.gas_margin_pct = gas_margin_pct
        self.receipt_timeout_s = receipt_timeout_s
        self.poll_latency_s = poll_latency_s

    @classmethod
    def connect(cls, rpc_url: str, *, request_timeout_s: float = 30.0) -> ChainClient:
        """Connect to a JSON-RPC URL; raises `ChainUnavailableError` if it does not answer."""
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout_s}))
        client = cls(w3)
        client.rpc(lambda: w3.eth.chain_id)
        return client

    def rpc(self, fn: Callable[[], _T]) -> _T:
        """Run one node call, translating transport failures into `ChainUnavailableError`."""
        try:
            return fn()
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ChainUnavailableError(f"JSON-RPC endpoint unavailable: {exc}") from exc

    @cached_property
    def chain_id(self) -> int:
        """The chain id (asked once)."""
        return self.rpc(lambda: self.w3.eth.chain_id)

    def block_number(self) -> int:
        """The latest block number."""
        return self.rpc(lambda: self.w3.eth.block_number)

    def latest_timestamp(self) -> int:
        """The latest block's timestamp (unix seconds)."""
        return int(self.rpc(lambda: self.w3.eth.get_block("latest"))["timestamp"])

    def contract(self, artifact: Artifact | str, address: str) -> Contract:
        """A web3 contract object of `artifact` at `address`."""
        art = load_artifact(artifact) if isinstance(artifact, str) else artifact
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=art.abi)

    def call(self, contract: Contract, fn_name: str, *args: Any) -> Any:
        """Run view function `fn_name`; a revert raises `ContractRevertError`."""
        fn = contract.functions[fn_name](*args)
        try:
            return self.rpc(fn.call)
        except ContractLogicError as exc:
            raise to_revert_error(exc, fn_name) from exc

    def transact(
        self,
        contract: Contract,
        fn_name: str,
        args: Sequence[Any],
        sender: LocalAccount,
        *,
        value: int = 0,
        gas: int | None = None,
    ) -> TxReceipt:
        """Send `fn_name(*args)` signed by `sender`; returns the successful receipt."""
        data = contract.encode_abi(fn_name, args=list(args))
        tx: TxParams = {"to": contract.address, "data": data}
        return self.send(tx, sender, value=value, gas=gas, context=fn_name)

    def deploy(
        self, artifact: Artifact | str, sender: LocalAccount, *args: Any
    ) -> tuple[ChecksumAddress, TxReceipt]:
        """Deploy `artifact` with constructor `args`; returns (address, receipt)."""
        art = load_artifact(artifact) if isinstance(artifact, str) else artifact
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = self.send({"from": sender.address, "data": data}, sender, context=art.name)
        address = receipt["contractAddress"]
        if address is None:
            raise ContractRevertError("unknown", ("no contract address",), b"", art.name)
        return Web3.to_checksum_address(address), receipt

    def send(
        self,
        tx: TxParams,
        sender: LocalAccount,
        *,
        value: int = 0,
        gas: int | None = None,
        context: str = "",
    ) -> TxReceipt:
        """Fill in nonce, fees and gas, sign, send, wait; raise on revert."""
        eth = self.w3.eth
        tx = tx.copy()
        tx["from"] = sender.address
        tx["value"] = Wei(value)
        tx["chainId"] = self.chain_id
        tx["nonce"] = self.rpc(lambda: eth.get_transaction_count(sender.address, "pending"))
        base_fee = int(self.rpc(lambda: eth.get_block("latest")).get("baseFeePerGas", 0))
        tip = self.rpc(lambda: eth.max_priority_fee)
        tx["maxPriorityFeePerGas"] = tip
        tx["maxFeePerGas"] = Wei(2 * base_fee + tip)
        if gas is None:
            try:
                estimate = self.rpc(lambda: eth.estimate_gas(tx))
            except ContractLogicError as exc:
                raise to_revert_error(exc, context) from exc
            gas = estimate + estimate * self.gas_margin_pct // 100
        tx["gas"] = gas
        signed = sender.sign_transaction(tx)  # type: ignore[arg-type]
        tx_hash = self.rpc(lambda: eth.send_raw_transaction(signed.raw_transaction))
        try:
            receipt = self.rpc(
                lambda: eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self.receipt_timeout_s, poll_latency=self.poll_latency_s
                )
            )
        except TimeExhausted as exc:
            raise TransactionTimeoutError(f"{context}: {tx_hash.hex()} not mined yet") from exc
        if receipt["status"] != 1:
            raise self._failure(tx, receipt, context)
        return receipt

    def _failure(self, tx: TxParams, receipt: TxReceipt, context: str) -> ContractRevertError:
        """Why a mined transaction failed: replay it as a call in its own block.

        The reverted transaction changed no contract state, so a call at its block (same
        timestamp, same state) reverts the same way, time-dependent checks included.
        """
        keys = ("from", "to", "data", "value", "gas")
        replay: TxParams = {k: v for k, v in tx.items() if k in keys}  # type: ignore[assignment]
        try:
            self.w3.eth.call(replay, block_identifier=receipt["blockNumber"])
        except ContractLogicError as exc:
            data = revert_data(exc)
            name, args = decode_revert(data)
            return ContractRevertError(name, args, data, context)
        return ContractRevertError("unknown", ("reverted on chain",), b"", context)
