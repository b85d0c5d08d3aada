"""Helpers of the indexer tests: scripted chain histories, indexing runs, state snapshots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from eth_account.signers.local import LocalAccount
from sqlalchemy.pool import NullPool

from indexer.blocks import RawLog
from indexer.decoding import LogDecoder
from indexer.follower import Follower, StepResult
from indexer.projections import PROJECTION_TABLES
from indexer.publisher import ChainPublisher
from indexer.rpc import RetryPolicy, RpcChainSource
from indexer.service import build_follower
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import Proposal, Split, System, VoteType, demo_token
from settlement.chain.policy import TOTAL_BPS
from tests.contracts.contract_helpers import ChainHarness, Distribution

Row = tuple[tuple[str, Any], ...]
STATE_TABLES = ("chain_events", "chain_raw_logs", *PROJECTION_TABLES)
MODEL_A, MODEL_B = 1, 2


def make_follower(
    system: System,
    rpc_urls: list[str],
    url: str,
    *,
    confirmations: int = 0,
    max_block_range: int = 2000,
    publisher: ChainPublisher | None = None,
    retry: RetryPolicy | None = None,
    rpc_timeout_s: float = 10.0,
) -> Follower:
    engine = create_engine(url, poolclass=NullPool)
    return build_follower(
        system.manifest,
        rpc_urls,
        engine,
        confirmations=confirmations,
        max_block_range=max_block_range,
        poll_interval_s=0.01,
        publisher=publisher,
        retry=retry,
        rpc_timeout_s=rpc_timeout_s,
    )


def index_to_head(follower: Follower, max_steps: int = 100_000) -> list[StepResult]:
    """Step until caught up (and the outbox published); the steps taken."""
    results = []
    for _ in range(max_steps):
        follower.relay()
        result = follower.step()
        follower.relay()
        results.append(result)
        if result.kind == "idle":
            return results
    raise AssertionError("the follower did not reach the head")


def table_rows(
    url: str, tables: tuple[str, ...] = STATE_TABLES
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of `tables`, sorted: two databases with equal snapshots hold the same state."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            snapshot = {}
            for name in tables:
                table = metadata.tables[name]
                rows = connection.execute(sa.select(table)).all()
                snapshot[name] = sorted(
                    (tuple((k, _plain(v)) for k, v in sorted(r._mapping.items())) for r in rows),
                    key=repr,
                )
            return snapshot
    finally:
        engine.dispose()


def column(rows: list[Row], name: str) -> list[Any]:
    """The values of one column of `table_rows` output."""
    return [dict(row)[name] for row in rows]


def _plain(value: Any) -> Any:
    # JSON documents compare by content: JSONB (PostgreSQL) reorders keys, JSON (SQLite) not.
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def fresh_index(system: System, rpc_url: str, url: str) -> dict[str, list[Row]]:
    """The state of a brand-new index of the chain as it is now."""
    follower = make_follower(system, [rpc_url], url)
    index_to_head(follower)
    follower.engine.dispose()
    return table_rows(url)


@dataclass
class History:
    """What a scripted history created, and the blocks worth checking."""

    licenses: list[int] = field(default_factory=list)
    stakers: list[str] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)


def fund_stakers(system: System, chain: ChainHarness, stakers: list[LocalAccount]) -> None:
    """Give stakers governance tokens (the stake token) and approve the staking contract."""
    a = chain.actors
    token = system.governance_token
    for staker in stakers:
        token.transfer(a.deployer, staker.address, 10**21)
        token.approve(staker, system.staking.address, 2**255)


@dataclass(frozen=True)
class GovernanceRound:
    """A proposal taken through its round, and the block of each of its steps."""

    proposal: Proposal
    proposal_id: int
    proposed: int
    voted: int
    queued: int
    executed: int


def governance_round(
    system: System, chain: ChainHarness, model_id: int, split: Split
) -> GovernanceRound:
    """A full proposal round that sets the model's policy (propose, vote, queue, execute)."""
    g, a = system.governor, chain.actors
    calldata = system.royalty_policy.encode_set_policy(model_id, split)
    proposal = Proposal((system.royalty_policy.address,), (calldata,), f"policy {model_id} {split}")
    proposal_id = g.propose(a.deployer, proposal)
    proposed = chain.w3.eth.block_number
    chain.mine(g.voting_delay() + 1)
    g.cast_vote(a.deployer, proposal_id, VoteType.FOR, "for the contributors")
    voted = chain.w3.eth.block_number
    chain.mine(g.proposal_deadline(proposal_id) - chain.w3.eth.block_number + 1)
    g.queue(a.deployer, proposal)
    queued = chain.w3.eth.block_number
    chain.advance_time(system.timelock.min_delay())
    g.execute(a.deployer, proposal)
    executed = chain.w3.eth.block_number
    return GovernanceRound(proposal, proposal_id, proposed, voted, queued, executed)


def scripted_history(system: System, chain: ChainHarness) -> History:
    """Licenses minted, transferred and revoked, stakes, a governance round, an epoch committed
    and claimed; records blocks to compare the projections with the chain at."""
    a = chain.actors
    h = History()
    registry, licenses, staking = system.model_registry, system.license_nft, system.staking
    registry.register_model(a.operator, MODEL_A, a.operator.address, "ipfs://model-a")
    registry.register_model(a.operator, MODEL_B, a.operator.address, "ipfs://model-b")
    h.licenses.append(licenses.mint(a.operator, MODEL_A, a.alice.address, 1_500_000))
    h.licenses.append(
        licenses.mint(a.operator, MODEL_A, a.bob.address, 2_000_000, chain.now() + 10**6)
    )
    h.licenses.append(licenses.mint(a.operator, MODEL_B, a.carol.address, 3))
    h.checkpoints.append(chain.w3.eth.block_number)
    chain.client.transact(
        licenses.contract,
        "transferFrom",
        [a.alice.address, a.carol.address, h.licenses[0]],
        a.alice,
    )
    licenses.revoke(a.operator, h.licenses[1])
    registry.set_metadata_uri(a.operator, MODEL_B, "ipfs://model-b-v2")
    registry.transfer_operator(a.operator, MODEL_B, a.mallory.address)
    h.checkpoints.append(chain.w3.eth.block_number)
    fund_stakers(system, chain, [a.alice, a.bob])
    staking.stake(a.alice, MODEL_A, 500)
    staking.stake(a.bob, MODEL_A, 300)
    staking.stake(a.bob, MODEL_B, 7)
    h.checkpoints.append(chain.w3.eth.block_number)
    staking.unstake(a.alice, MODEL_A, 200)
    chain.advance_time(staking.cooldown_s() + 1)
    staking.withdraw(a.alice, MODEL_A)
    h.stakers += [a.alice.address, a.bob.address]
    h.checkpoints.append(chain.w3.eth.block_number)
    governance_round(system, chain, MODEL_A, Split(1_000, 1_000, TOTAL_BPS - 2_000))
    h.checkpoints.append(chain.w3.eth.block_number)
    # An epoch committed, then claimed after its dispute window.
    token, distributor = demo_token(chain.client, system.manifest), system.royalty_distributor
    dist = Distribution.of([(a.alice.address, 600), (a.bob.address, 400)])
    token.approve(a.settler, distributor.address, dist.total)
    distributor.commit_epoch(a.settler, 1, dist.root, dist.total, b"\x01" * 32, b"\x02" * 32)
    chain.advance_time(distributor.dispute_window_s() + 1)
    distributor.claim(a.alice, dist.claim(1, 0))
    h.checkpoints.append(chain.w3.eth.block_number)
    return h


def scripted_logs(system: System, chain: ChainHarness) -> tuple[LogDecoder, list[RawLog]]:
    """The deployment's decoder and every log of `scripted_history` plus a distributor pause
    and unpause, fetched raw."""
    scripted_history(system, chain)
    a = chain.actors
    system.royalty_distributor.pause(a.guardian)
    system.royalty_distributor.unpause(a.guardian)
    decoder = LogDecoder.for_manifest(system.manifest)
    source = RpcChainSource([chain.anvil.rpc_url])
    logs = source.logs(system.manifest.deploy_block, source.head(), decoder.addresses)
    return decoder, logs


def full_path_decoder(decoder: LogDecoder) -> LogDecoder:
    """A copy of `decoder` that validates every event in full (no fast path)."""
    full = LogDecoder.__new__(LogDecoder)
    full.__dict__.update(decoder.__dict__)
    full.fast = False
    return full
