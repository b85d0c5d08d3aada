"""The demo's on-chain world: contracts deployed, models registered, licenses, stakes.

Everything here is real transactions on a local chain, made through the typed wrappers of
`settlement.chain`; the demo then drives inference traffic against this world.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from deploy.local import Anvil
from settlement.chain import (
    ChainClient,
    DeploymentConfig,
    DeploymentManifest,
    Proposal,
    Split,
    System,
    VoteType,
    deploy_system,
    dev_account,
)

DAY = 86_400
E6 = 10**6

#: Short governance periods so that a vote completes within the demo.
DEMO_DEPLOYMENT = {
    "voting_delay_blocks": 1,
    "voting_period_blocks": 5,
    "timelock_delay_s": 60,
    "dispute_window_s": 600,
    "stake_cooldown_s": DAY,
}


@dataclass(frozen=True)
class DemoModel:
    """A model served on Triton and registered on-chain."""

    name: str  # the Triton model name
    model_id: int
    operator: LocalAccount
    billing_metric: str  # "tokens" or "batch_items"


@dataclass(frozen=True)
class DemoLicense:
    """A license NFT held by a licensee, with the terms it was minted with."""

    license_id: int
    model: DemoModel
    holder: LocalAccount
    price_per_unit_e6: int
    expires_at: int
    label: str


@dataclass
class DemoWorld:
    """What the demo set up on-chain."""

    client: ChainClient
    system: System
    manifest: DeploymentManifest
    models: list[DemoModel] = field(default_factory=list)
    licenses: list[DemoLicense] = field(default_factory=list)
    stakes: list[tuple[str, int, int]] = field(default_factory=list)  # (staker, model, amount)


#: Carol's second license expires this many seconds after minting, before any traffic.
EXPIRES_IN_S = 3

# anvil development accounts by role (public keys of a public mnemonic: demo only).
DEPLOYER, SETTLER, GUARDIAN, TREASURY = 0, 1, 2, 3
OPERATORS = (4, 5)
LICENSEES = (6, 7, 8)
CONTRIBUTORS = (9, 10, 11)


def build_world(client: ChainClient) -> DemoWorld:
    """Deploy the system and script the community: 2 models, 5 licenses, 4 stakes."""
    deployer = dev_account(DEPLOYER)
    config = DeploymentConfig(
        settler=dev_account(SETTLER).address,
        guardian=dev_account(GUARDIAN).address,
        treasury=dev_account(TREASURY).address,
        **DEMO_DEPLOYMENT,  # type: ignore[arg-type]
    )
    manifest = deploy_system(client, deployer, config)
    system = System.connect(client, manifest)
    world = DemoWorld(client=client, system=system, manifest=manifest)

    echo_op, doubler_op = (dev_account(i) for i in OPERATORS)
    for name, op, metric in (
        ("echo-lm", echo_op, "tokens"),
        ("doubler", doubler_op, "batch_items"),
    ):
        model_id = len(world.models) + 1
        system.model_registry.register_model(op, model_id, op.address, f"ipfs://demo/{name}")
        world.models.append(DemoModel(name, model_id, op, metric))

    echo, doubler = world.models
    alice, bob, carol = (dev_account(i) for i in LICENSEES)
    now = int(time.time())  # usage is timed by the wall clock: expiry is set against it
    for model, holder, price, expires, label in (
        # pricePerUnitE6 = base units per unit x 10^6; dUSD has 6 decimals.
        (echo, alice, 2_500 * E6, 0, "alice: echo-lm, 0.0025 dUSD/token"),
        (echo, bob, 2_000 * E6, 0, "bob: echo-lm, 0.002 dUSD/token"),
        (doubler, carol, 40_000 * E6, 0, "carol: doubler, 0.04 dUSD/item"),
        (echo, carol, 3_000 * E6, now + EXPIRES_IN_S, "carol: echo-lm, expired before use"),
        (doubler, bob, 35_000 * E6, 0, "bob: doubler, revoked mid-traffic"),
    ):
        license_id = system.license_nft.mint(
            model.operator, model.model_id, holder.address, price, expires
        )
        world.licenses.append(DemoLicense(license_id, model, holder, price, expires, label))

    # Contributors stake governance tokens (the deployer holds the supply and hands some out).
    gov = system.governance_token
    staking = system.staking
    plan = ((9, echo, 600), (10, echo, 400), (10, doubler, 500), (11, doubler, 1_500))
    for index, model, amount in plan:
        who = dev_account(index)
        units = amount * 10**18
        gov.transfer(deployer, who.address, units)
        gov.approve(who, staking.address, units)
        staking.stake(who, model.model_id, units)
        world.stakes.append((who.address, model.model_id, units))
    return world


@dataclass(frozen=True)
class PolicyVote:
    """A governance proposal changing one model's split, voted and queued on the timelock."""

    model: DemoModel
    split: Split
    proposal: Proposal
    proposal_id: int
    votes_for: int


def queue_policy_vote(world: DemoWorld, chain: Anvil, model: DemoModel, split: Split) -> PolicyVote:
    """Propose `split` for `model`, vote it through and queue it; `execute_policy_vote` applies
    it later (mid-traffic). Mines the voting blocks and moves chain time past the timelock
    delay, which the demo chain (started in the past) absorbs without outrunning the clock."""
    deployer = dev_account(DEPLOYER)
    system = world.system
    governor = system.governor
    proposal = Proposal(
        targets=(system.royalty_policy.address,),
        calldatas=(system.royalty_policy.encode_set_policy(model.model_id, split),),
        description=(
            f"{model.name}: operator {split.operator_bps} / treasury {split.treasury_bps} / "
            f"contributors {split.contributors_bps} bps"
        ),
    )
    proposal_id = governor.propose(deployer, proposal)
    for _ in range(governor.voting_delay() + 1):
        chain.rpc("evm_mine")
    votes = system.governance_token.get_votes(deployer.address)
    governor.cast_vote(deployer, proposal_id, VoteType.FOR)
    while world.client.w3.eth.block_number <= governor.proposal_deadline(proposal_id):
        chain.rpc("evm_mine")
    governor.queue(deployer, proposal)
    chain.rpc("evm_increaseTime", [system.timelock.min_delay() + 1])
    chain.rpc("evm_mine")
    return PolicyVote(model, split, proposal, proposal_id, votes)


def execute_policy_vote(world: DemoWorld, vote: PolicyVote) -> None:
    """Execute the queued proposal: the new split applies from this block on."""
    world.system.governor.execute(dev_account(DEPLOYER), vote.proposal)
