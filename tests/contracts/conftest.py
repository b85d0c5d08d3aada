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
    DeploymentConfig,
    System,
    demo_token,
    deploy_system,
    dev_account,
)
from settlement.chain.tokens import MintableToken
from tests.contracts.contract_helpers import TEST_CONFIG, Actors, ChainHarness


@pytest.fixture(scope="session")
def actors() -> Actors:
    names = Actors.__dataclass_fields__
    return Actors(*(dev_account(i) for i in range(len(names))))


@pytest.fixture(scope="session")
def session_client(anvil_chain: Anvil) -> ChainClient:
    client = ChainClient.connect(anvil_chain.rpc_url)
    client.poll_latency_s = 0.005
    return client


@pytest.fixture(scope="session")
def session_system(session_client: ChainClient, actors: Actors) -> System:
    """The system, deployed once per session with `TEST_CONFIG`."""
    config = DeploymentConfig(
        settler=actors.settler.address,
        guardian=actors.guardian.address,
        treasury=actors.treasury.address,
        **TEST_CONFIG,  # type: ignore[arg-type]
    )
    manifest = deploy_system(session_client, actors.deployer, config)
    return System.connect(session_client, manifest)


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
