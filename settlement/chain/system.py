"""A deployed system as typed wrappers, built from its deployment manifest."""

from __future__ import annotations

from dataclasses import dataclass

from settlement.chain.client import ChainClient
from settlement.chain.distributor import RoyaltyDistributor
from settlement.chain.errors import ManifestError
from settlement.chain.governance import GovernanceToken, RoyaltyGovernor, RoyaltyTimelock
from settlement.chain.licenses import LicenseNFT
from settlement.chain.manifest import DeploymentManifest
from settlement.chain.policy import RoyaltyPolicy
from settlement.chain.registry import ModelRegistry
from settlement.chain.staking import Staking
from settlement.chain.tokens import ERC20Token


@dataclass(frozen=True)
class System:
    """Every contract of one deployment."""

    manifest: DeploymentManifest
    payment_token: ERC20Token
    governance_token: GovernanceToken
    timelock: RoyaltyTimelock
    governor: RoyaltyGovernor
    model_registry: ModelRegistry
    license_nft: LicenseNFT
    staking: Staking
    royalty_policy: RoyaltyPolicy
    royalty_distributor: RoyaltyDistributor

    @classmethod
    def connect(cls, client: ChainClient, manifest: DeploymentManifest) -> System:
        """Bind the manifest's contracts; checks the chain id and the ABIs first."""
        if client.chain_id != manifest.chain_id:
            raise ManifestError(
                f"manifest is for chain {manifest.chain_id}, connected to {client.chain_id}"
            )
        manifest.check_artifacts()
        a = manifest.address
        return cls(
            manifest=manifest,
            payment_token=ERC20Token(client, a("payment_token")),
            governance_token=GovernanceToken(client, a("governance_token")),
            timelock=RoyaltyTimelock(client, a("timelock")),
            governor=RoyaltyGovernor(client, a("governor")),
            model_registry=ModelRegistry(client, a("model_registry")),
            license_nft=LicenseNFT(client, a("license_nft")),
            staking=Staking(client, a("staking")),
            royalty_policy=RoyaltyPolicy(client, a("royalty_policy")),
            royalty_distributor=RoyaltyDistributor(client, a("royalty_distributor")),
        )
