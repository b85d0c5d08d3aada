"""ModelRegistry and LicenseNFT: registration, operators, minting, sale, revocation."""

from __future__ import annotations

import pytest

from settlement.chain import LicenseOffer, System
from settlement.chain.tokens import MintableToken
from tests.contracts.contract_helpers import ChainHarness, reverts

pytestmark = pytest.mark.anvil

MODEL = 42


@pytest.fixture
def model(system: System, chain: ChainHarness) -> int:
    """Model 42, operated by the operator account."""
    a = chain.actors
    system.model_registry.register_model(a.mallory, MODEL, a.operator.address, "ipfs://model-42")
    return MODEL


def test_register_model_and_events(system: System, chain: ChainHarness) -> None:
    r, a = system.model_registry, chain.actors
    receipt = r.register_model(a.alice, 7, a.operator.address, "ipfs://seven")
    assert r.events(receipt, "ModelRegistered") == [
        {"modelId": 7, "operator": a.operator.address, "metadataURI": "ipfs://seven"}
    ]
    assert r.operator_of(7) == a.operator.address
    assert r.metadata_uri(7) == "ipfs://seven"
    assert r.exists(7)
    assert not r.exists(8)
    assert r.operator_of(8) is None


def test_register_refuses_reserved_duplicate_and_zero_operator(
    system: System, chain: ChainHarness, model: int
) -> None:
    r, a = system.model_registry, chain.actors
    with reverts("ReservedModelId"):
        r.register_model(a.alice, 0, a.alice.address, "x")
    with reverts("ModelAlreadyRegistered"):
        r.register_model(a.mallory, model, a.mallory.address, "hijack")
    with reverts("ZeroOperator"):
        r.register_model(a.alice, 9, "0x" + "00" * 20, "x")
    assert r.operator_of(model) == a.operator.address


def test_operator_transfer_and_metadata(system: System, chain: ChainHarness, model: int) -> None:
    r, a = system.model_registry, chain.actors
    with reverts("NotModelOperator"):
        r.transfer_operator(a.mallory, model, a.mallory.address)
    with reverts("NotModelOperator"):
        r.set_metadata_uri(a.mallory, model, "evil")
    receipt = r.transfer_operator(a.operator, model, a.bob.address)
    assert r.events(receipt, "ModelOperatorTransferred") == [
        {"modelId": model, "previousOperator": a.operator.address, "newOperator": a.bob.address}
    ]
    with reverts("NotModelOperator"):
        r.set_metadata_uri(a.operator, model, "old operator")
    receipt = r.set_metadata_uri(a.bob, model, "ipfs://v2")
    assert r.events(receipt, "ModelMetadataUpdated") == [
        {"modelId": model, "metadataURI": "ipfs://v2"}
    ]
    assert r.metadata_uri(model) == "ipfs://v2"
    with reverts("UnknownModel"):
        r.transfer_operator(a.bob, 999, a.bob.address)


def test_operator_mints_license_with_terms_in_the_event(
    system: System, chain: ChainHarness, model: int
) -> None:
    lic, a = system.license_nft, chain.actors
    expires = chain.now() + 86_400
    args = (model, a.alice.address, 2_500_000, expires)
    receipt = chain.client.transact(lic.contract, "mint", args, a.operator)
    (minted,) = lic.events(receipt, "LicenseMinted")
    assert minted == {
        "licenseId": 1,
        "modelId": model,
        "to": a.alice.address,
        "pricePerUnitE6": 2_500_000,
        "expiresAt": expires,
    }
    (transfer,) = lic.events(receipt, "Transfer")
    assert transfer == {"from": "0x" + "00" * 20, "to": a.alice.address, "tokenId": 1}
    terms = lic.terms(1)
    assert (terms.model_id, terms.price_per_unit_e6, terms.expires_at) == (
        model,
        2_500_000,
        expires,
    )
    assert terms.revoked_at == 0
    assert lic.owner_of(1) == a.alice.address
    assert lic.is_valid(1)
    assert lic.mint(a.operator, model, a.bob.address, 1) == 2  # expiresAt 0 = never
    assert lic.terms(2).expires_at == 0


def test_license_minted_by_a_non_operator_reverts(
    system: System, chain: ChainHarness, model: int
) -> None:
    lic, a = system.license_nft, chain.actors
    for outsider in (a.mallory, a.alice, a.deployer):
        with reverts("NotModelOperator"):
            lic.mint(outsider, model, outsider.address, 0)
    with reverts("UnknownModel"):
        lic.mint(a.operator, 999, a.alice.address, 1)
    with reverts("ExpiryInPast"):
        lic.mint(a.operator, model, a.alice.address, 1, expires_at=chain.now())


def test_license_expires(system: System, chain: ChainHarness, model: int) -> None:
    lic, a = system.license_nft, chain.actors
    license_id = lic.mint(a.operator, model, a.alice.address, 1, expires_at=chain.now() + 100)
    assert lic.is_valid(license_id)
    chain.advance_time(100)
    assert not lic.is_valid(license_id)


def test_revocation_by_the_current_operator_only(
    system: System, chain: ChainHarness, model: int
) -> None:
    lic, a = system.license_nft, chain.actors
    license_id = lic.mint(a.operator, model, a.alice.address, 1)
    for outsider in (a.mallory, a.alice):
        with reverts("NotModelOperator"):
            lic.revoke(outsider, license_id)
    system.model_registry.transfer_operator(a.operator, model, a.bob.address)
    with reverts("NotModelOperator"):
        lic.revoke(a.operator, license_id)  # no longer the operator

    receipt = lic.revoke(a.bob, license_id)

    ts = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert lic.events(receipt, "LicenseRevoked") == [
        {"licenseId": license_id, "modelId": model, "by": a.bob.address}
    ]
    assert lic.terms(license_id).revoked_at == ts
    assert not lic.is_valid(license_id)
    with reverts("AlreadyRevoked"):
        lic.revoke(a.bob, license_id)
    with reverts("ERC721NonexistentToken"):
        lic.revoke(a.bob, 999)


def test_buy_at_the_listed_offer(
    system: System, chain: ChainHarness, model: int, payment_token: MintableToken
) -> None:
    lic, a = system.license_nft, chain.actors
    offer = LicenseOffer(
        sale_price=5_000_000, price_per_unit_e6=1_000, duration_s=30 * 86_400, active=True
    )
    with reverts("NoActiveOffer"):
        lic.buy(a.alice, model, a.alice.address, offer)
    with reverts("NotModelOperator"):
        lic.set_offer(a.mallory, model, offer)
    receipt = lic.set_offer(a.operator, model, offer)
    assert lic.events(receipt, "LicenseOfferSet") == [
        {
            "modelId": model,
            "salePrice": 5_000_000,
            "pricePerUnitE6": 1_000,
            "duration": 30 * 86_400,
            "active": True,
        }
    ]
    assert lic.offer_of(model) == offer
    payment_token.mint(a.deployer, a.alice.address, 5_000_000)
    payment_token.approve(a.alice, lic.address, 5_000_000)
    stale = LicenseOffer(4_000_000, 1_000, 30 * 86_400, True)
    with reverts("OfferMismatch"):
        lic.buy(a.alice, model, a.alice.address, stale)

    license_id = lic.buy(a.alice, model, a.carol.address, offer)

    terms = lic.terms(license_id)
    assert terms.price_per_unit_e6 == 1_000
    assert terms.expires_at == chain.now() + 30 * 86_400
    assert lic.owner_of(license_id) == a.carol.address
    assert payment_token.balance_of(a.operator.address) == 5_000_000
    assert payment_token.balance_of(a.alice.address) == 0
    with reverts("ERC20InsufficientAllowance"):
        lic.buy(a.alice, model, a.alice.address, offer)


def test_buy_forever_license_and_withdrawn_offer(
    system: System, chain: ChainHarness, model: int
) -> None:
    lic, a = system.license_nft, chain.actors
    free = LicenseOffer(0, 7, 0, True)
    lic.set_offer(a.operator, model, free)
    license_id = lic.buy(a.alice, model, a.alice.address, free)
    assert lic.terms(license_id).expires_at == 0
    lic.set_offer(a.operator, model, LicenseOffer(0, 7, 0, False))
    with reverts("NoActiveOffer"):
        lic.buy(a.alice, model, a.alice.address, free)
