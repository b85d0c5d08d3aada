"""Deploy the whole contract system, wire its roles, and describe it in a manifest.

Order and wiring:
1. payment token: an existing ERC-20, or (local chains only) a fresh mintable demo token of
   which the settler gets a float to fund epochs;
2. governance: the ERC20Votes token (whole supply to one holder, who self-delegates when it is
   the deployer), the timelock (deployer as temporary admin) and the Governor; the Governor
   becomes the timelock's only proposer and canceller, anyone may execute, and the deployer
   renounces the timelock admin role: from then on only proposals change anything;
3. ModelRegistry, LicenseNFT (paid in the payment token), Staking (of the governance token
   unless told otherwise);
4. RoyaltyPolicy owned by the timelock, with the initial default split and treasury;
5. RoyaltyDistributor: admin the timelock, settler and guardian roles to their holders.
The wiring is read back from the chain before the manifest is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from settlement.chain.artifacts import (
    DEMO_TOKEN_CONTRACT,
    compiler_manifest,
    load_artifact,
)
from settlement.chain.client import DEV_CHAIN_ID, ChainClient
from settlement.chain.distributor import (
    DEFAULT_ADMIN_ROLE,
    GUARDIAN_ROLE,
    SETTLER_ROLE,
    RoyaltyDistributor,
)
from settlement.chain.errors import DeploymentConfigError, WiringError
from settlement.chain.manifest import (
    Compiler,
    ContractRecord,
    DeploymentManifest,
    Parameters,
    Roles,
)
from settlement.chain.policy import Split
from settlement.chain.tokens import MintableToken

DAY = 86_400
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class DeploymentConfig:
    """What to deploy and with which settings. Addresses are hex strings."""

    settler: str
    guardian: str
    treasury: str
    payment_token: str | None = None
    """An existing ERC-20; None deploys the demo token (local chains only)."""
    allow_demo_token: bool = False
    """Allow the demo token off the dev chain (31337), e.g. on a public testnet."""
    demo_token_mint: int = 1_000_000 * 10**6
    """Demo-token base units minted to the settler (6 decimals: one million)."""
    governance_holder: str | None = None
    """Receives the whole governance supply; default the deployer."""
    governance_supply: int = 1_000_000 * 10**18
    stake_token: str | None = None
    """Token staked on models; default the governance token."""
    stake_cooldown_s: int = 7 * DAY
    dispute_window_s: int = 3_600
    sweep_delay_s: int = 365 * DAY
    voting_delay_blocks: int = 7_200
    voting_period_blocks: int = 50_400
    proposal_threshold: int = 0
    quorum_percent: int = 4
    timelock_delay_s: int = 2 * DAY
    default_policy: Split = field(default_factory=lambda: Split(2_000, 1_000, 7_000))

    def check(self) -> None:
        """Raise `DeploymentConfigError` on settings the contracts would refuse."""
        for name in ("settler", "guardian", "treasury"):
            if not Web3.is_address(getattr(self, name)):
                raise DeploymentConfigError(f"{name}: not an address")
        self.default_policy.check()
        if not 0 < self.quorum_percent <= 100:
            raise DeploymentConfigError("quorum_percent must be in 1..100")
        if self.voting_period_blocks <= 0:
            raise DeploymentConfigError("voting_period_blocks must be positive")
        if self.sweep_delay_s < 30 * DAY:
            raise DeploymentConfigError("sweep_delay_s must be at least 30 days")
        if not 0 <= self.dispute_window_s <= 365 * DAY:
            raise DeploymentConfigError("dispute_window_s must be within 0..365 days")


class _Deployer:
    """Sends the deployment transactions and keeps their records."""

    def __init__(self, client: ChainClient, sender: LocalAccount) -> None:
        self.client = client
        self.sender = sender
        self.records: dict[str, ContractRecord] = {}
        self.first_block: int | None = None

    def deploy(self, key: str, contract: str, *args: Any) -> str:
        address, receipt = self.client.deploy(contract, self.sender, *args)
        self._note(receipt)
        self.records[key] = ContractRecord(
            contract=contract,
            address=address,
            abi_sha256=load_artifact(contract).abi_sha256,
            block=receipt["blockNumber"],
        )
        return address

    def external(self, key: str, contract: str, address: str) -> str:
        self.records[key] = ContractRecord(
            contract=contract, address=address, abi_sha256=None, block=None
        )
        return address

    def send(self, contract: str, address: str, fn_name: str, *args: Any) -> TxReceipt:
        receipt = self.client.transact(
            self.client.contract(contract, address), fn_name, args, self.sender
        )
        self._note(receipt)
        return receipt

    def _note(self, receipt: TxReceipt) -> None:
        if self.first_block is None:
            self.first_block = int(receipt["blockNumber"])


def deploy_system(
    client: ChainClient, deployer: LocalAccount, config: DeploymentConfig
) -> DeploymentManifest:
    """Deploy and wire every contract; return the manifest (not yet written anywhere)."""
    config.check()
    d = _Deployer(client, deployer)
    me = deployer.address
    holder = Web3.to_checksum_address(config.governance_holder or me)

    if config.payment_token is None:
        if client.chain_id != DEV_CHAIN_ID and not config.allow_demo_token:
            raise DeploymentConfigError(
                f"chain {client.chain_id} is not the dev chain: pass an existing payment token"
            )
        token = d.deploy("payment_token", DEMO_TOKEN_CONTRACT, "Demo USD", "dUSD", 6, me)
        if config.demo_token_mint:
            d.send(DEMO_TOKEN_CONTRACT, token, "mint", config.settler, config.demo_token_mint)
    else:
        token = d.external("payment_token", "IERC20", config.payment_token)

    gov_token = d.deploy(
        "governance_token",
        "GovernanceToken",
        "Royalty Community",
        "RCOM",
        holder,
        config.governance_supply,
    )
    if holder == me:
        d.send("GovernanceToken", gov_token, "delegate", me)
    timelock = d.deploy(
        "timelock", "RoyaltyTimelock", config.timelock_delay_s, [], [ZERO_ADDRESS], me
    )
    governor = d.deploy(
        "governor",
        "RoyaltyGovernor",
        gov_token,
        timelock,
        config.voting_delay_blocks,
        config.voting_period_blocks,
        config.proposal_threshold,
        config.quorum_percent,
    )
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
        d.send("RoyaltyTimelock", timelock, "grantRole", Web3.keccak(text=role), governor)
    d.send("RoyaltyTimelock", timelock, "renounceRole", DEFAULT_ADMIN_ROLE, me)

    registry = d.deploy("model_registry", "ModelRegistry")
    d.deploy("license_nft", "LicenseNFT", registry, token)
    d.deploy(
        "staking", "Staking", config.stake_token or gov_token, registry, config.stake_cooldown_s
    )
    split = config.default_policy
    d.deploy(
        "royalty_policy",
        "RoyaltyPolicy",
        timelock,
        config.treasury,
        split.operator_bps,
        split.treasury_bps,
        split.contributors_bps,
    )
    d.deploy(
        "royalty_distributor",
        "RoyaltyDistributor",
        token,
        timelock,
        config.settler,
        config.guardian,
        config.dispute_window_s,
        config.sweep_delay_s,
    )

    assert d.first_block is not None  # at least one transaction was sent above
    compiler = compiler_manifest()
    manifest = DeploymentManifest(
        chain_id=client.chain_id,
        deploy_block=d.first_block,
        contracts=d.records,
        roles=Roles(
            deployer=me,
            settler=config.settler,
            guardian=config.guardian,
            treasury=config.treasury,
            governance=timelock,
            governor=governor,
        ),
        parameters=Parameters(
            dispute_window_s=config.dispute_window_s,
            sweep_delay_s=config.sweep_delay_s,
            stake_cooldown_s=config.stake_cooldown_s,
            voting_delay_blocks=config.voting_delay_blocks,
            voting_period_blocks=config.voting_period_blocks,
            proposal_threshold=str(config.proposal_threshold),
            quorum_percent=config.quorum_percent,
            timelock_delay_s=config.timelock_delay_s,
            governance_supply=str(config.governance_supply),
            default_policy_bps=(split.operator_bps, split.treasury_bps, split.contributors_bps),
        ),
        compiler=Compiler(
            solc=compiler["compiler"]["version"], sources_sha256=compiler["sourcesSha256"]
        ),
    )
    check_wiring(client, manifest)
    return manifest


def check_wiring(client: ChainClient, manifest: DeploymentManifest) -> None:
    """Read the roles back from the chain; raise `WiringError` if any is not as meant."""
    roles = manifest.roles
    timelock = client.contract("RoyaltyTimelock", manifest.address("timelock"))
    distributor = RoyaltyDistributor(client, manifest.address("royalty_distributor"))
    policy = client.contract("RoyaltyPolicy", manifest.address("royalty_policy"))
    checks = {
        "governor proposes on the timelock": client.call(
            timelock, "hasRole", Web3.keccak(text="PROPOSER_ROLE"), roles.governor
        ),
        "anyone executes on the timelock": client.call(
            timelock, "hasRole", Web3.keccak(text="EXECUTOR_ROLE"), ZERO_ADDRESS
        ),
        "deployer is no timelock admin": not client.call(
            timelock, "hasRole", DEFAULT_ADMIN_ROLE, roles.deployer
        ),
        "timelock owns the policy": client.call(policy, "owner") == roles.governance,
        "timelock administers the distributor": distributor.has_role(
            DEFAULT_ADMIN_ROLE, roles.governance
        ),
        "settler holds SETTLER_ROLE": distributor.has_role(SETTLER_ROLE, roles.settler),
        "guardian holds GUARDIAN_ROLE": distributor.has_role(GUARDIAN_ROLE, roles.guardian),
    }
    if roles.deployer != roles.governance:
        checks["deployer is no distributor admin"] = not distributor.has_role(
            DEFAULT_ADMIN_ROLE, roles.deployer
        )
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise WiringError(f"deployment wiring wrong: {', '.join(failed)}")


def demo_token(client: ChainClient, manifest: DeploymentManifest) -> MintableToken:
    """The demo payment token of a local deployment (raises if the token is external)."""
    record = manifest.contracts["payment_token"]
    if record.contract != DEMO_TOKEN_CONTRACT:
        raise DeploymentConfigError("this deployment uses an external payment token")
    return MintableToken(client, record.address)
