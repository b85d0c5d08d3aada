"""Models, licenses, stakes, policies and governance from a really indexed anvil chain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from deploy.local import Anvil
from settlement.chain import System
from tests.api.conftest import AppFactory
from tests.api.support import seed_accrual
from tests.api.test_claim_e2e import api_anvil, api_system  # noqa: F401 - fixtures
from tests.contracts.contract_helpers import ChainHarness, dev_actors
from tests.indexer.support import (
    MODEL_A,
    MODEL_B,
    History,
    index_to_head,
    make_follower,
    scripted_history,
)

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def history(
    api_anvil: Anvil,  # noqa: F811
    api_system: System,  # noqa: F811
) -> Iterator[tuple[History, ChainHarness]]:
    """The scripted history, played once for the module and reverted after it."""
    snapshot = api_anvil.rpc("evm_snapshot")
    chain = ChainHarness(api_anvil, api_system.royalty_policy.client, dev_actors())
    yield scripted_history(api_system, chain), chain
    assert api_anvil.rpc("evm_revert", [snapshot]) is True


@pytest.fixture
def indexed(
    history: tuple[History, ChainHarness],
    api_system: System,  # noqa: F811
    api_url: str,
    make_client: AppFactory,
) -> tuple[TestClient, History, ChainHarness]:
    """The history indexed into a fresh database, and a client over it."""
    played, chain = history
    follower = make_follower(api_system, [chain.anvil.rpc_url], api_url)
    index_to_head(follower)
    follower.engine.dispose()
    return make_client(manifest=api_system.manifest), played, chain


def test_models(indexed: tuple[TestClient, History, ChainHarness]) -> None:
    client, _history, chain = indexed
    a = chain.actors
    models = client.get("/v1/models").json()["items"]
    assert [m["model_id"] for m in models] == [str(MODEL_A), str(MODEL_B)]
    model_a = client.get(f"/v1/models/{MODEL_A}").json()
    assert model_a["operator"] == a.operator.address
    assert model_a["policy"] == {
        "model_id": str(MODEL_A),
        "operator_bps": 1_000,
        "treasury_bps": 1_000,
        "contributors_bps": 8_000,
    }
    assert model_a["total_staked"] == "600"  # 500 + 300 - 200
    model_b = client.get(f"/v1/models/{MODEL_B}").json()
    assert model_b["operator"] == a.mallory.address
    assert model_b["metadata_uri"] == "ipfs://model-b-v2"
    assert model_b["total_staked"] == "7"
    assert client.get("/v1/models/999").status_code == 404
    assert client.get(f"/v1/models/{2**256}").status_code == 404


def test_licenses(indexed: tuple[TestClient, History, ChainHarness], engine: Engine) -> None:
    client, history, chain = indexed
    a = chain.actors
    first, second, third = history.licenses
    with engine.begin() as conn:
        seed_accrual(conn, "u-1", epoch=4, model_id=MODEL_A, license_id=first, units=3, price_e6=5)
        seed_accrual(conn, "u-2", epoch=4, model_id=MODEL_A, license_id=first, units=2, price_e6=5)
        seed_accrual(conn, "u-3", epoch=5, model_id=MODEL_A, license_id=first, units=1, price_e6=5)
    listed = client.get("/v1/licenses", params={"model_id": MODEL_A}).json()["items"]
    assert [lic["license_id"] for lic in listed] == [str(first), str(second)]
    detail = client.get(f"/v1/licenses/{first}").json()
    assert detail["owner"] == a.carol.address
    assert detail["price_per_unit_e6"] == "1500000"
    assert [h["owner"] for h in detail["owner_history"]] == [a.alice.address, a.carol.address]
    assert detail["revocation"] is None
    assert detail["charges"] == [
        {"epoch": 4, "accruals": 2, "units": "5", "fees_e6": "25"},
        {"epoch": 5, "accruals": 1, "units": "1", "fees_e6": "5"},
    ]
    revoked = client.get(f"/v1/licenses/{second}").json()
    assert revoked["revocation"]["revoked_by"] == a.operator.address
    assert client.get(f"/v1/licenses/{third}").json()["model_id"] == str(MODEL_B)


def test_stakes_and_policies(indexed: tuple[TestClient, History, ChainHarness]) -> None:
    client, _history, chain = indexed
    a = chain.actors
    stakes = client.get("/v1/stakes", params={"model_id": MODEL_A}).json()["items"]
    assert {s["staker"]: s["stake"] for s in stakes} == {
        a.alice.address: "300",
        a.bob.address: "300",
    }
    bobs = client.get("/v1/stakes", params={"staker": a.bob.address.lower()}).json()["items"]
    assert [(s["model_id"], s["stake"]) for s in bobs] == [
        (str(MODEL_A), "300"),
        (str(MODEL_B), "7"),
    ]
    page = client.get("/v1/stakes", params={"limit": 1}).json()
    rest = client.get("/v1/stakes", params={"limit": 50, "cursor": page["next_cursor"]}).json()
    assert len(page["items"]) + len(rest["items"]) == 3
    policies = client.get("/v1/policies", params={"model_id": MODEL_A}).json()["items"]
    assert policies[-1]["contributors_bps"] == 8_000


def test_governance(indexed: tuple[TestClient, History, ChainHarness]) -> None:
    client, _history, chain = indexed
    proposals = client.get("/v1/governance/proposals").json()["items"]
    assert len(proposals) == 1
    proposal = proposals[0]
    assert proposal["status"] == "executed"
    assert int(proposal["votes_for"]) > 0
    assert proposal["votes_against"] == "0"
    votes = client.get(f"/v1/governance/proposals/{proposal['proposal_id']}/votes").json()
    assert [v["voter"] for v in votes["items"]] == [chain.actors.deployer.address]
    assert votes["items"][0]["reason"] == "for the contributors"
    assert client.get("/v1/governance/proposals/1/votes").status_code == 404
