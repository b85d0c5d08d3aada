"""Fixtures and helpers of the settler tests: an anvil of their own with the system deployed,
a chain history with stakes, its index in a migrated database, and accruals at chosen times."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from deploy.local import Anvil
from indexer.follower import Follower
from schemas import migrate
from schemas.accrual import Accrual
from schemas.chain import ChainPosition
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System, demo_token
from settlement.committer import Committer
from settlement.settler import Settler, SettlerConfig
from stream.epochs import EpochClock
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore
from tests.contracts.contract_helpers import (
    Actors,
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)
from tests.indexer.support import fund_stakers, index_to_head, make_follower

MODEL = 1
EPOCH_S = 100
LATENESS_S = 5
PRICE_E6 = 1_500_000
SETTLER_FUNDS = 10**24
LEAF_ENCODING = ("uint256", "address", "uint256")


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def st_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """The settler tests' own anvil (automine): they move its time a long way."""
    chain = Anvil(tmp_path_factory.mktemp("settler-anvil")).start()
    yield chain
    chain.stop()


@pytest.fixture(scope="session")
def st_system(st_anvil: Anvil) -> System:
    return deploy_test_system(connect_fast(st_anvil.rpc_url), dev_actors())


@pytest.fixture
def st_chain(st_anvil: Anvil, st_system: System) -> Iterator[ChainHarness]:
    """The chain inside a snapshot reverted after the test."""
    snapshot = st_anvil.rpc("evm_snapshot")
    yield ChainHarness(st_anvil, st_system.royalty_policy.client, dev_actors())
    assert st_anvil.rpc("evm_revert", [snapshot]) is True


@pytest.fixture
def st_db(db_url: str) -> str:
    """A fresh migrated database (SQLite and PostgreSQL)."""
    migrate.upgrade(db_url)
    return db_url


# -- the chain history ------------------------------------------------------------------------


@dataclass
class World:
    """A chain with one model, a license and two stakers, indexed into `url`."""

    system: System
    chain: ChainHarness
    url: str
    engine: Engine
    genesis: int
    license_id: int
    stake_position: ChainPosition
    clock: EpochClock
    usage_ids: list[str] = field(default_factory=list)
    follower: Follower | None = None

    @property
    def actors(self) -> Actors:
        return self.chain.actors

    def index(self) -> None:
        """Index the chain to its head (confirmations 0: the head is finalized)."""
        if self.follower is None:
            self.follower = make_follower(self.system, [self.chain.anvil.rpc_url], self.url)
        index_to_head(self.follower)

    def close(self) -> None:
        if self.follower is not None:
            self.follower.engine.dispose()
        self.engine.dispose()

    def accrue(self, epoch: int, offsets_units: Iterable[tuple[int, int]]) -> list[str]:
        """Insert accruals of `epoch` at `start + offset` with `units` each; their usage ids."""
        a = self.actors
        ids = []
        rows = []
        for offset, units in offsets_units:
            usage_id = f"u-{uuid.uuid4().hex}"
            ids.append(usage_id)
            rows.append(
                Accrual(
                    usage_id=usage_id,
                    epoch=epoch,
                    model_id=MODEL,
                    license_id=self.license_id,
                    payer=a.alice.address.lower(),
                    event_time=self.clock.start_of(epoch) + offset,
                    units=units,
                    price_per_unit_e6=PRICE_E6,
                    fee_e6=units * PRICE_E6,
                    state_interval=self.stake_position,
                    operator=a.operator.address.lower(),
                    operator_bps=2_000,
                    treasury_bps=1_000,
                    contributors_bps=7_000,
                )
            )
        with self.engine.begin() as connection:
            SqlAlchemyAccrualStore(connection).add_accruals(rows)
        self.usage_ids += ids
        return ids

    def advance_to(self, unix_time: int) -> None:
        """Mine a block at `unix_time` (if the chain is behind it) and index it."""
        if self.chain.now() < unix_time:
            self.chain.advance_time(unix_time - self.chain.now())
        self.index()

    def settler(
        self,
        *,
        committer: bool = True,
        wall_clock: int | None = None,
    ) -> Settler:
        """A settler over this world (the usage watermark from events unless `wall_clock`)."""
        config = SettlerConfig(
            chain_id=self.chain.client.chain_id,
            distributor=self.system.royalty_distributor.address,
            clock=self.clock,
            allowed_lateness_s=LATENESS_S,
            wall_clock_watermark=wall_clock is not None,
        )
        return Settler(
            self.engine,
            config,
            self.committer() if committer else None,
            now=(lambda: wall_clock) if wall_clock is not None else (lambda: self.genesis),
        )

    def committer(self) -> Committer:
        return Committer(
            self.engine,
            self.system.royalty_distributor,
            self.actors.settler,
            receipt_timeout_s=30,
        )


def build_world(system: System, chain: ChainHarness, url: str) -> World:
    """Register a model, mint a license, stake (alice 600, bob 400), fund the settler, index."""
    a = chain.actors
    system.model_registry.register_model(a.operator, MODEL, a.operator.address, "ipfs://m")
    license_id = system.license_nft.mint(a.operator, MODEL, a.alice.address, PRICE_E6)
    fund_stakers(system, chain, [a.alice, a.bob])
    system.staking.stake(a.alice, MODEL, 600)
    receipt = system.staking.stake(a.bob, MODEL, 400)
    log_index = max(int(entry["logIndex"]) for entry in receipt["logs"])
    position = ChainPosition(block_number=int(receipt["blockNumber"]), log_index=log_index)
    demo_token(chain.client, system.manifest).mint(a.deployer, a.settler.address, SETTLER_FUNDS)
    genesis = chain.now() + 10
    world = World(
        system=system,
        chain=chain,
        url=url,
        engine=create_engine(url, poolclass=NullPool),
        genesis=genesis,
        license_id=license_id,
        stake_position=position,
        clock=EpochClock(EPOCH_S, genesis),
    )
    world.index()
    return world


# -- database reads ---------------------------------------------------------------------------


def rows(engine: Engine, table: str, order_by: str | None = None) -> list[dict[str, Any]]:
    t = metadata.tables[table]
    query = sa.select(t)
    if order_by:
        query = query.order_by(t.c[order_by])
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(query)]


def epoch_rows(engine: Engine) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in rows(engine, "epochs", "id")}
