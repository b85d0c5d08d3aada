"""Fixtures of the indexer tests: an anvil of their own with the system deployed once, a
snapshot per test, and migrated databases (SQLite and PostgreSQL through `db_url`).

The indexer tests reorganise their chain (`anvil_reorg`, snapshots), so they never share the
session anvil of the contract tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
def ix_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """The indexer tests' own anvil (automine)."""
    chain = Anvil(tmp_path_factory.mktemp("indexer-anvil")).start()
    yield chain
    chain.stop()


@pytest.fixture(scope="session")
def ix_actors() -> Actors:
    return dev_actors()


@pytest.fixture(scope="session")
def ix_system(ix_anvil: Anvil, ix_actors: Actors) -> System:
    """The system deployed once on the indexer anvil."""
    return deploy_test_system(connect_fast(ix_anvil.rpc_url), ix_actors)


@pytest.fixture
def ix_chain(ix_anvil: Anvil, ix_system: System, ix_actors: Actors) -> Iterator[ChainHarness]:
    """The chain inside a snapshot reverted after the test."""
    snapshot = ix_anvil.rpc("evm_snapshot")
    yield ChainHarness(ix_anvil, ix_system.royalty_policy.client, ix_actors)
    assert ix_anvil.rpc("evm_revert", [snapshot]) is True


@pytest.fixture
def manifest_path(ix_system: System, tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    ix_system.manifest.write(path)
    return path


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """A fresh database (SQLite and PostgreSQL) at the migrations' head."""
    migrate.upgrade(db_url)
    return db_url


@pytest.fixture
def sqlite_migrated(tmp_path: Path) -> str:
    """A fresh migrated SQLite database (for tests that compare two indexes)."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate.upgrade(url)
    return url
