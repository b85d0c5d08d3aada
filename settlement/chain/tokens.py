"""ERC-20 tokens: the payment token (any ERC-20) and the local demo token."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from settlement.chain.base import BoundContract


class ERC20Token(BoundContract):
    """Any ERC-20 (read and move); the ABI is the demo token's, a superset of ERC-20."""

    artifact_name = "MintableERC20"

    def balance_of(self, account: str) -> int:
        """Balance of `account` in base units."""
        return int(self._call("balanceOf", account))

    def allowance(self, owner: str, spender: str) -> int:
        """What `spender` may still pull from `owner`."""
        return int(self._call("allowance", owner, spender))

    def total_supply(self) -> int:
        """The total supply in base units."""
        return int(self._call("totalSupply"))

    def decimals(self) -> int:
        """Decimals of the token's display unit."""
        return int(self._call("decimals"))

    def symbol(self) -> str:
        """The token's symbol."""
        return str(self._call("symbol"))

    def approve(self, sender: LocalAccount, spender: str, amount: int) -> TxReceipt:
        """Let `spender` pull up to `amount` from `sender`."""
        return self._send(sender, "approve", spender, amount)

    def transfer(self, sender: LocalAccount, to: str, amount: int) -> TxReceipt:
        """Send `amount` from `sender` to `to`."""
        return self._send(sender, "transfer", to, amount)


class MintableToken(ERC20Token):
    """The test-only mintable ERC-20 used as payment token on local chains."""

    def mint(self, sender: LocalAccount, to: str, amount: int) -> TxReceipt:
        """Mint `amount` to `to` (the token's owner only)."""
        return self._send(sender, "mint", to, amount)
