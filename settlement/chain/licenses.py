"""LicenseNFT: ERC-721 licenses with immutable terms, minted, sold and revoked per model."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import TxReceipt

from settlement.chain.base import BoundContract


@dataclass(frozen=True)
class LicenseTerms:
    """A license's immutable terms and its revocation time (0 = not revoked)."""

    model_id: int
    price_per_unit_e6: int
    expires_at: int
    revoked_at: int


@dataclass(frozen=True)
class LicenseOffer:
    """The listed price at which anyone may buy a license of a model."""

    sale_price: int
    price_per_unit_e6: int
    duration_s: int
    active: bool


class LicenseNFT(BoundContract):
    """Typed wrapper of `LicenseNFT.sol`."""

    artifact_name = "LicenseNFT"

    def mint(
        self,
        sender: LocalAccount,
        model_id: int,
        to: str,
        price_per_unit_e6: int,
        expires_at: int = 0,
    ) -> int:
        """Mint a license (model operator only); returns the new license id."""
        receipt = self._send(sender, "mint", model_id, to, price_per_unit_e6, expires_at)
        return self._minted_id(receipt)

    def set_offer(
        self,
        sender: LocalAccount,
        model_id: int,
        offer: LicenseOffer,
    ) -> TxReceipt:
        """List (or withdraw) the model's offer (model operator only)."""
        return self._send(
            sender,
            "setOffer",
            model_id,
            offer.sale_price,
            offer.price_per_unit_e6,
            offer.duration_s,
            offer.active,
        )

    def buy(self, sender: LocalAccount, model_id: int, to: str, offer: LicenseOffer) -> int:
        """Buy a license at `offer` (as read from `offer_of`); returns the new license id.

        The buyer must have approved the sale price to this contract on the payment token.
        """
        receipt = self._send(
            sender,
            "buy",
            model_id,
            to,
            offer.sale_price,
            offer.price_per_unit_e6,
            offer.duration_s,
        )
        return self._minted_id(receipt)

    def revoke(self, sender: LocalAccount, license_id: int) -> TxReceipt:
        """Revoke a license (its model's current operator only)."""
        return self._send(sender, "revoke", license_id)

    def terms(self, license_id: int) -> LicenseTerms:
        """The license's terms."""
        model_id, price, expires_at, revoked_at = self._call("terms", license_id)
        return LicenseTerms(model_id, price, expires_at, revoked_at)

    def offer_of(self, model_id: int) -> LicenseOffer:
        """The model's current offer."""
        sale_price, price, duration, active = self._call("offerOf", model_id)
        return LicenseOffer(sale_price, price, duration, active)

    def owner_of(self, license_id: int) -> ChecksumAddress:
        """The license's current holder."""
        return Web3.to_checksum_address(self._call("ownerOf", license_id))

    def is_valid(self, license_id: int) -> bool:
        """Whether the license exists, is not revoked and not expired now."""
        return bool(self._call("isValid", license_id))

    def payment_token(self) -> ChecksumAddress:
        """The token licenses are bought with."""
        return Web3.to_checksum_address(self._call("paymentToken"))

    def _minted_id(self, receipt: TxReceipt) -> int:
        (minted,) = self.events(receipt, "LicenseMinted")
        return int(minted["licenseId"])
