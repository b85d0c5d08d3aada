"""Fixtures of the stream tests: the system deployed once on the session anvil, a snapshot per
test, and migrated databases (SQLite and PostgreSQL through `db_url`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.local import Anvil
from schemas import migrate
from settlement.chain import System
from tests.contracts.contract_helpers import (
    Actors,
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)


@pytest.fixture(scope="session")
def st_actors() -> Actors:
    return dev_actors()


@pytest.fixture(scope="session")
def st_system(anvil_chain: Anvil, st_actors: Actors) -> System:
    """The system deployed once on the session anvil for the stream tests."""
    return deploy_test_system(connect_fast(anvil_chain.rpc_url), st_actors)


@pytest.fixture
def st_chain(anvil_chain: Anvil, st_system: System, st_actors: Actors) -> Iterator[ChainHarness]:
    """The chain inside a snapshot reverted after the test."""
    snapshot = anvil_chain.rpc("evm_snapshot")
    yield ChainHarness(anvil_chain, st_system.royalty_policy.client, st_actors)
    assert anvil_chain.rpc("evm_revert", [snapshot]) is True


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """A fresh database at the migrations' head."""
    migrate.upgrade(db_url)
    return db_url
