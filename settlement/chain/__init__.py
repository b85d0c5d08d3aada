"""Chain adapter: the compiled contracts, typed web3.py wrappers, deployment and its manifest.

    client = ChainClient.connect("http://127.0.0.1:8545")
    manifest = deploy_system(client, deployer, DeploymentConfig(settler=..., guardian=..., ...))
    manifest.write(path)
    system = System.connect(client, DeploymentManifest.load(path))
    system.royalty_distributor.claim(sender, Claim(epoch, index, account, amount, proof))

The contracts' events are listed in docs/chain-events.md. Only this package imports web3 in
the settlement code; the settlement core stays pure.
"""

from settlement.chain.artifacts import Artifact, abi_sha256, artifacts_dir, load_artifact
from settlement.chain.client import DEV_CHAIN_ID, ChainClient, account_from_key, dev_account
from settlement.chain.deployment import DeploymentConfig, check_wiring, demo_token, deploy_system
from settlement.chain.distributor import (
    GUARDIAN_ROLE,
    SETTLER_ROLE,
    Claim,
    EpochInfo,
    EpochStatus,
    RoyaltyDistributor,
)
from settlement.chain.errors import (
    ArtifactError,
    ChainError,
    ChainUnavailableError,
    ContractRevertError,
    DeploymentConfigError,
    ManifestError,
    TransactionTimeoutError,
    WiringError,
)
from settlement.chain.governance import (
    GovernanceToken,
    Proposal,
    ProposalState,
    RoyaltyGovernor,
    RoyaltyTimelock,
    VoteType,
)
from settlement.chain.licenses import LicenseNFT, LicenseOffer, LicenseTerms
from settlement.chain.manifest import DeploymentManifest
from settlement.chain.policy import RoyaltyPolicy, Split
from settlement.chain.registry import ModelRegistry
from settlement.chain.staking import PendingWithdrawal, Staking
from settlement.chain.system import System
from settlement.chain.tokens import ERC20Token, MintableToken

__all__ = [
    "DEV_CHAIN_ID",
    "GUARDIAN_ROLE",
    "SETTLER_ROLE",
    "Artifact",
    "ArtifactError",
    "ChainClient",
    "ChainError",
    "ChainUnavailableError",
    "Claim",
    "ContractRevertError",
    "DeploymentConfig",
    "DeploymentConfigError",
    "DeploymentManifest",
    "ERC20Token",
    "EpochInfo",
    "EpochStatus",
    "GovernanceToken",
    "LicenseNFT",
    "LicenseOffer",
    "LicenseTerms",
    "ManifestError",
    "MintableToken",
    "ModelRegistry",
    "PendingWithdrawal",
    "Proposal",
    "ProposalState",
    "RoyaltyDistributor",
    "RoyaltyGovernor",
    "RoyaltyPolicy",
    "RoyaltyTimelock",
    "Split",
    "Staking",
    "System",
    "TransactionTimeoutError",
    "VoteType",
    "WiringError",
    "abi_sha256",
    "account_from_key",
    "artifacts_dir",
    "check_wiring",
    "demo_token",
    "deploy_system",
    "dev_account",
    "load_artifact",
]
