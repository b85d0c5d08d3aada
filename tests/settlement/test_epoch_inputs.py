"""load_epoch_inputs over a real indexed chain (stakes, a governance policy change, a model
nobody stakes) and accruals from the embedded join, on SQLite and PostgreSQL; and the
canonical inputs encoding against eth_abi.

`Billing` below is also the world of the verify tests: it settles epochs the way the settler
does (settled_epoch, inputs, distribution, rows in one transaction) and commits them."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from eth_abi.abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from web3 import Web3

from deploy.local import Anvil
from indexer.asof import AsOf, ChainState
from schemas import migrate
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System, demo_token
from settlement.distribution import EpochDistribution, IntervalGroup, compute_distribution
from settlement.epoch_inputs import (
    INPUTS_ABI_TYPES,
    INPUTS_TAG,
    EpochInputs,
    encode_inputs,
    load_epoch_inputs,
)
from settlement.keccak import keccak256
from settlement.usage_root import read_usage_records, usage_root
from stream.embedded import EmbeddedJoinRunner, numbered
from stream.epochs import EpochClock
from tests.contracts.contract_helpers import (
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)
from tests.indexer.support import index_to_head, make_follower
from tests.stream.scenario import EPOCH_S, MODEL_A, MODEL_B, Script, build

_t = metadata.tables

settings.register_profile("inputs-ci", max_examples=200, deadline=None)
settings.register_profile("inputs-dev", max_examples=40, deadline=None)
PROPERTY = settings.get_profile("inputs-ci" if os.environ.get("CI") else "inputs-dev")


# -- the world: a chain, its index, the join's accruals, epochs settled and committed ----------


@pytest.fixture(scope="session")
def dist_system(anvil_chain: Anvil) -> System:
    """The system deployed once on the session anvil for the settlement-distribution tests."""
    return deploy_test_system(connect_fast(anvil_chain.rpc_url), dev_actors())


@pytest.fixture
def dist_chain(anvil_chain: Anvil, dist_system: System) -> Iterator[ChainHarness]:
    """The chain inside a snapshot reverted after the test."""
    snapshot = anvil_chain.rpc("evm_snapshot")
    yield ChainHarness(anvil_chain, dist_system.royalty_policy.client, dev_actors())
    assert anvil_chain.rpc("evm_revert", [snapshot]) is True


@dataclass
class Billing:
    """The stream scenario's chain indexed into `url`, its usage joined into accruals."""

    system: System
    chain: ChainHarness
    url: str
    engine: Engine
    script: Script

    @property
    def chain_id(self) -> int:
        return self.system.manifest.chain_id

    @property
    def distributor(self) -> str:
        return self.system.royalty_distributor.address

    def index(self) -> None:
        follower = make_follower(self.system, [self.chain.anvil.rpc_url], self.url)
        try:
            index_to_head(follower)
        finally:
            follower.release_lease()
            follower.engine.dispose()

    def epochs(self) -> list[int]:
        accruals = _t["accruals"]
        with self.engine.connect() as connection:
            found = connection.execute(sa.select(accruals.c.epoch).distinct()).scalars()
            return sorted(int(epoch) for epoch in found)

    def settle(self, epoch: int) -> tuple[EpochInputs, EpochDistribution]:
        """What the settler does for `epoch`, in one transaction (status `computed`)."""
        accruals = _t["accruals"]
        with self.engine.begin() as connection:
            connection.execute(
                accruals.update()
                .where(accruals.c.settled_epoch.is_(None), accruals.c.epoch <= epoch)
                .values(settled_epoch=epoch)
            )
            inputs = load_epoch_inputs(
                connection, chain_id=self.chain_id, distributor=self.distributor, epoch=epoch
            )
            d = compute_distribution(epoch, inputs.groups, inputs.carries_in)
            start = self.script.genesis + epoch * EPOCH_S
            connection.execute(
                _t["epochs"].insert(),
                {
                    "id": epoch,
                    "start_time": start,
                    "end_time": start + EPOCH_S,
                    "status": "computed",
                    "root": "0x" + d.root.hex(),
                    "total": d.total,
                    "inputs_hash": "0x" + inputs.inputs_hash().hex(),
                    "usage_root": "0x" + inputs.usage_root.hex(),
                    "leaf_count": len(d.leaves),
                    "accrual_count": d.accrual_count,
                    "fees_e6": d.fees_e6,
                    "computed_at": datetime.now(UTC),
                },
            )
            if d.leaves:
                connection.execute(
                    _t["epoch_allocations"].insert(),
                    [
                        {
                            "epoch_id": epoch,
                            "leaf_index": x.index,
                            "account": x.account,
                            "amount": x.amount,
                        }
                        for x in d.leaves
                    ],
                )
            connection.execute(
                _t["recipient_carries"].insert(),
                [
                    {"account": a, "epoch_id": epoch, "carry_e6": c}
                    for a, c in d.carries_out.items()
                ],
            )
        return inputs, d

    def commit(
        self, epoch: int, inputs: EpochInputs, d: EpochDistribution, *, root: bytes | None = None
    ) -> None:
        """Fund and commit `epoch` on-chain (with `root` instead of the computed one if given),
        index the commit and mark the epoch committed."""
        a = self.chain.actors
        distributor = self.system.royalty_distributor
        self.system.payment_token.approve(a.settler, distributor.address, d.total)
        receipt = distributor.commit_epoch(
            a.settler, epoch, root or d.root, d.total, inputs.inputs_hash(), inputs.usage_root
        )
        self.index()
        with self.engine.begin() as connection:
            connection.execute(
                _t["epochs"]
                .update()
                .where(_t["epochs"].c.id == epoch)
                .values(
                    status="committed",
                    tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
                    block_number=int(receipt["blockNumber"]),
                )
            )


def billing(system: System, chain: ChainHarness, url: str) -> Billing:
    """Script the stream scenario's chain, index it, and run its usage through the join."""
    migrate.upgrade(url)
    script = build(system, chain)
    chain.advance_time(script.last_time - chain.now() + 5)
    demo_token(chain.client, system.manifest).mint(
        chain.actors.deployer, chain.actors.settler.address, 10**24
    )
    world = Billing(system, chain, url, create_engine(url, poolclass=NullPool), script)
    world.index()
    runner = EmbeddedJoinRunner(
        world.engine, world.chain_id, script.key_ring, EpochClock(EPOCH_S, script.genesis)
    )
    runner.process(numbered(script.messages))
    assert runner.held_count == 0
    return world


@pytest.fixture
def world(dist_system: System, dist_chain: ChainHarness, db_url: str) -> Iterator[Billing]:
    built = billing(dist_system, dist_chain, db_url)
    yield built
    built.engine.dispose()


# -- load_epoch_inputs ------------------------------------------------------------------------


@pytest.mark.anvil
def test_load_epoch_inputs_groups_stakes_carries_and_usage_root(world: Billing) -> None:
    a = world.chain.actors
    expected = {k: e for k, e in world.script.expected.items() if e.reason is None}
    first, *_, last = world.epochs()
    inputs_1, d_1 = world.settle(first)
    inputs_2, d_2 = world.settle(last)

    # Every billed usage id in exactly one epoch, every fee in exactly one group.
    assert inputs_1.usage_count + inputs_2.usage_count == len(expected)
    assert inputs_1.fees_e6 + inputs_2.fees_e6 == sum(e.fee_e6 for e in expected.values())
    for inputs in (inputs_1, inputs_2):
        keys = [g.sort_key for g in inputs.groups]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys)
        with world.engine.connect() as connection:
            records = list(read_usage_records(connection, inputs.epoch))
        assert usage_root(records) == inputs.usage_root
        assert len(records) == inputs.usage_count

    # Stakes and treasury at each interval: nobody on model B; alice, then alice and bob, on A.
    treasury = a.treasury.address.lower()
    groups = inputs_1.groups + inputs_2.groups
    assert {g.treasury for g in groups} == {treasury}
    assert {g.operator for g in groups} == {a.operator.address.lower()}
    stakes_seen = {tuple(sorted(g.stakes.items())) for g in groups if g.model_id == MODEL_A}
    alice, bob = a.alice.address.lower(), a.bob.address.lower()
    assert tuple(sorted({alice: 500}.items())) in stakes_seen
    assert tuple(sorted({alice: 500, bob: 300}.items())) in stakes_seen
    assert all(not g.stakes for g in groups if g.model_id == MODEL_B)
    with world.engine.connect() as connection:  # the bulk stake scan answers as ChainState
        state = ChainState(connection, world.chain_id)
        for g in groups:
            as_of = state.stakes(g.model_id, AsOf.at_block(g.state_block))
            assert g.stakes == {k.lower(): v for k, v in as_of.items()}
    # The governance vote changed the split of model A mid-scenario.
    assert {(g.operator_bps, g.contributors_bps) for g in groups if g.model_id == MODEL_A} == {
        (2_000, 7_000),
        (1_000, 8_000),
    }

    # Carries chain: the second epoch starts from the first one's non-zero carries.
    assert inputs_1.carries_in == {}
    assert inputs_2.carries_in == {k: v for k, v in d_1.carries_out.items() if v}
    assert d_2.fees_e6 + sum(inputs_2.carries_in.values()) == (
        10**6 * d_2.total + sum(d_2.carries_out.values())
    )

    # Reading again gives the same inputs and the same hash.
    with world.engine.connect() as connection:
        again = load_epoch_inputs(
            connection, chain_id=world.chain_id, distributor=world.distributor, epoch=last
        )
        nothing = load_epoch_inputs(
            connection, chain_id=world.chain_id, distributor=world.distributor, epoch=999
        )
    assert again == inputs_2
    assert again.inputs_hash() == inputs_2.inputs_hash()
    assert nothing.groups == ()
    assert nothing.usage_count == 0
    assert nothing.usage_root == bytes(32)
    assert compute_distribution(999, nothing.groups, nothing.carries_in).total == 0


# -- the canonical encoding -------------------------------------------------------------------

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
uints = st.one_of(st.integers(0, 2**256 - 1), st.integers(0, 1000))


@st.composite
def epoch_inputs(draw: st.DrawFn) -> EpochInputs:
    groups = draw(
        st.lists(
            st.builds(
                IntervalGroup,
                model_id=uints,
                state_block=st.integers(0, 2**63),
                state_log_index=st.integers(0, 1000),
                fee_e6=uints,
                accrual_count=st.integers(0, 10**9),
                operator=addresses,
                treasury=addresses,
                operator_bps=st.integers(0, 10_000),
                treasury_bps=st.integers(0, 10_000),
                contributors_bps=st.integers(0, 10_000),
                stakes=st.dictionaries(addresses, uints, max_size=4),
            ),
            max_size=4,
            unique_by=lambda g: (g.model_id, g.state_block, g.state_log_index),
        )
    )
    return EpochInputs(
        chain_id=draw(st.integers(1, 2**64)),
        distributor=Web3.to_checksum_address(draw(addresses)),
        epoch=draw(st.integers(0, 2**64)),
        groups=tuple(sorted(groups, key=lambda g: g.sort_key)),
        carries_in=draw(st.dictionaries(addresses, st.integers(0, 999_999), max_size=4)),
        usage_root=draw(st.binary(min_size=32, max_size=32)),
        usage_count=draw(st.integers(0, 10**9)),
    )


def _pairs(values: dict[str, int]) -> list[tuple[str, int]]:
    return sorted((k, v) for k, v in values.items() if v)


@PROPERTY
@given(epoch_inputs())
def test_encoding_is_abi_encode_of_the_documented_types(inputs: EpochInputs) -> None:
    reference = abi_encode(
        list(INPUTS_ABI_TYPES),
        [
            INPUTS_TAG,
            inputs.chain_id,
            inputs.distributor,
            inputs.epoch,
            inputs.usage_root,
            inputs.usage_count,
            [
                (
                    g.model_id,
                    g.state_block,
                    g.state_log_index,
                    g.fee_e6,
                    g.accrual_count,
                    g.operator,
                    g.treasury,
                    g.operator_bps,
                    g.treasury_bps,
                    g.contributors_bps,
                    _pairs(dict(g.stakes)),
                )
                for g in inputs.groups
            ],
            _pairs(inputs.carries_in),
        ],
    )
    assert encode_inputs(inputs) == reference
    assert inputs.inputs_hash() == keccak256(reference)


@PROPERTY
@given(epoch_inputs(), st.randoms(use_true_random=False))
def test_hash_ignores_order_letter_case_and_zero_entries(
    inputs: EpochInputs, rng: random.Random
) -> None:
    groups = list(inputs.groups)
    rng.shuffle(groups)
    reordered = EpochInputs(
        inputs.chain_id,
        inputs.distributor.lower(),
        inputs.epoch,
        tuple(
            IntervalGroup(
                g.model_id,
                g.state_block,
                g.state_log_index,
                g.fee_e6,
                g.accrual_count,
                Web3.to_checksum_address(g.operator),
                g.treasury,
                g.operator_bps,
                g.treasury_bps,
                g.contributors_bps,
                {
                    **{Web3.to_checksum_address(k): v for k, v in g.stakes.items()},
                    "0x" + "00" * 19 + "99": 0,
                },
            )
            for g in groups
        ),
        {**dict(reversed(list(inputs.carries_in.items()))), "0x" + "00" * 19 + "98": 0},
        inputs.usage_root,
        inputs.usage_count,
    )
    assert reordered.inputs_hash() == inputs.inputs_hash()
