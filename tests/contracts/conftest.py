"""Fixtures of the contract tests: one deployed system per session, a snapshot per test.

The system is deployed once on the session's anvil (short governance periods so a full
proposal round takes milliseconds); each test runs inside an `evm_snapshot` that is reverted
afterwards, so tests are isolated and fast. Accounts are anvil's development accounts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.local import Anvil
from settlement.chain import (
    ChainClient,
    System,
    demo_token,
)
from settlement.chain.tokens import MintableToken
from tests.contracts.contract_helpers import (
    Actors,
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)


@pytest.fixture(scope="session")
def actors() -> Actors:
    return dev_actors()


@pytest.fixture(scope="session")
def session_client(anvil_chain: Anvil) -> ChainClient:
    return connect_fast(anvil_chain.rpc_url)


@pytest.fixture(scope="session")
def session_system(session_client: ChainClient, actors: Actors) -> System:
    """The system, deployed once per session with `TEST_CONFIG`."""
    return deploy_test_system(session_client, actors)


@pytest.fixture
def chain(
    anvil_chain: Anvil, session_client: ChainClient, actors: Actors, session_system: System
) -> Iterator[ChainHarness]:
    """The chain inside a snapshot reverted after the test (the system already deployed)."""
    snapshot = anvil_chain.rpc("evm_snapshot")
    yield ChainHarness(anvil_chain, session_client, actors)
    assert anvil_chain.rpc("evm_revert", [snapshot]) is True


@pytest.fixture
def system(chain: ChainHarness, session_system: System) -> System:
    """The deployed system, isolated per test."""
    return session_system


@pytest.fixture
def payment_token(chain: ChainHarness, system: System) -> MintableToken:
    """The demo payment token (the deployer may mint)."""
    return demo_token(chain.client, system.manifest)
