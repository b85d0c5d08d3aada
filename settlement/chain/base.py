"""The base of the typed contract wrappers: a contract at an address, through a `ChainClient`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from settlement.chain.client import ChainClient


def _checksummed(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Top-level address arguments in any letter case, checksummed as web3 requires."""
    return tuple(
        Web3.to_checksum_address(a)
        if isinstance(a, str) and len(a) == 42 and Web3.is_address(a)
        else a
        for a in args
    )


class BoundContract:
    """A deployed contract of a known artifact. Subclasses add typed methods.

    Reads return Python values; writes take the signing account first and return the receipt
    (a revert raises `ContractRevertError`). `encode` gives calldata for governance proposals.
    Address arguments may be given in any letter case.
    """

    artifact_name: ClassVar[str]

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address: ChecksumAddress = Web3.to_checksum_address(address)
        self.contract: Contract = client.contract(self.artifact_name, self.address)

    @classmethod
    def deploy(cls, client: ChainClient, sender: LocalAccount, *args: Any) -> Self:
        """Deploy a new instance with constructor `args`."""
        address, _ = client.deploy(cls.artifact_name, sender, *args)
        return cls(client, address)

    def _call(self, fn_name: str, *args: Any) -> Any:
        return self.client.call(self.contract, fn_name, *_checksummed(args))

    def _send(self, sender: LocalAccount, fn_name: str, *args: Any, value: int = 0) -> TxReceipt:
        return self.client.transact(self.contract, fn_name, _checksummed(args), sender, value=value)

    def encode(self, fn_name: str, *args: Any) -> bytes:
        """ABI-encoded calldata of `fn_name(*args)` (e.g. for a governance proposal)."""
        data = self.contract.encode_abi(fn_name, args=list(_checksummed(args)))
        return bytes(Web3.to_bytes(hexstr=data))

    def events(self, receipt: TxReceipt, event_name: str) -> list[dict[str, Any]]:
        """The arguments of every `event_name` this contract emitted in `receipt`, in order."""
        event = self.contract.events[event_name]()
        logs: Sequence[Any] = event.process_receipt(receipt, errors=DISCARD)
        return [dict(log["args"]) for log in logs]
