"""ModelRegistry: model id → operator and metadata URI."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import TxReceipt

from settlement.chain.base import BoundContract


class ModelRegistry(BoundContract):
    """Typed wrapper of `ModelRegistry.sol`."""

    artifact_name = "ModelRegistry"

    def register_model(
        self, sender: LocalAccount, model_id: int, operator: str, metadata_uri: str
    ) -> TxReceipt:
        """Register `model_id` (not 0) with its operator; emits `ModelRegistered`."""
        return self._send(sender, "registerModel", model_id, operator, metadata_uri)

    def transfer_operator(
        self, sender: LocalAccount, model_id: int, new_operator: str
    ) -> TxReceipt:
        """Hand the model to `new_operator` (current operator only)."""
        return self._send(sender, "transferOperator", model_id, new_operator)

    def set_metadata_uri(self, sender: LocalAccount, model_id: int, uri: str) -> TxReceipt:
        """Replace the model's metadata URI (operator only)."""
        return self._send(sender, "setMetadataURI", model_id, uri)

    def operator_of(self, model_id: int) -> ChecksumAddress | None:
        """The model's operator, or None when the id is not registered."""
        operator = str(self._call("operatorOf", model_id))
        return None if int(operator, 16) == 0 else Web3.to_checksum_address(operator)

    def metadata_uri(self, model_id: int) -> str:
        """The model's metadata URI."""
        return str(self._call("metadataURI", model_id))

    def exists(self, model_id: int) -> bool:
        """Whether the model is registered."""
        return bool(self._call("exists", model_id))
