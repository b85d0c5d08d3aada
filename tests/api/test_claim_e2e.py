"""End to end on anvil: epochs committed on-chain, a contributor claims them all with the
transaction the API builds, the indexer sees the claims, and nothing is left to claim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from web3 import Web3

from deploy.local import Anvil
from settlement.chain import System, demo_token
from tests.api.conftest import AppFactory
from tests.api.support import SeededEpoch, seed_epoch
from tests.contracts.contract_helpers import (
    Actors,
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)
from tests.indexer.support import fund_stakers, index_to_head, make_follower

pytestmark = pytest.mark.anvil

MODEL = 1


@pytest.fixture(scope="module")
def api_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    chain = Anvil(tmp_path_factory.mktemp("api-anvil")).start()
    yield chain
    chain.stop()


@pytest.fixture(scope="module")
def api_system(api_anvil: Anvil) -> System:
    return deploy_test_system(connect_fast(api_anvil.rpc_url), dev_actors())


@pytest.fixture
def chain(api_anvil: Anvil, api_system: System) -> Iterator[ChainHarness]:
    snapshot = api_anvil.rpc("evm_snapshot")
    yield ChainHarness(api_anvil, api_system.royalty_policy.client, dev_actors())
    assert api_anvil.rpc("evm_revert", [snapshot]) is True


def _commit(system: System, chain: ChainHarness, epoch: SeededEpoch) -> int:
    """Approve and commit the epoch's tree as the settler; the commit's block number."""
    a = chain.actors
    token, distributor = demo_token(chain.client, system.manifest), system.royalty_distributor
    token.approve(a.settler, distributor.address, epoch.total)
    receipt = distributor.commit_epoch(
        a.settler, epoch.id, epoch.tree.root_bytes, epoch.total, b"\x11" * 32, b"\x22" * 32
    )
    return int(receipt["blockNumber"])


def _set_status(engine: Engine, epoch: int, status: str, claimable_at: int) -> None:
    table = sa.table("epochs", sa.column("id"), sa.column("status"), sa.column("claimable_at"))
    with engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.id == epoch)
            .values(status=status, claimable_at=claimable_at)
        )


def _send_signed(chain: ChainHarness, actors: Actors, tx: dict[str, object]) -> dict[str, object]:
    """Sign the API's transaction with alice's key (eth_account) and send it raw."""
    w3 = chain.w3
    alice = actors.alice
    full = {
        "to": Web3.to_checksum_address(str(tx["to"])),
        "data": tx["data"],
        "value": int(str(tx["value"])),
        "chainId": tx["chain_id"],
        "nonce": w3.eth.get_transaction_count(alice.address),
        "gas": 1_000_000,
        "maxFeePerGas": 2 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    signed = Account.sign_transaction(full, alice.key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return dict(w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01))


def test_claim_all_end_to_end(
    chain: ChainHarness,
    api_system: System,
    api_anvil: Anvil,
    api_url: str,
    engine: Engine,
    make_client: AppFactory,
    tmp_path: Path,
) -> None:
    a, system = chain.actors, api_system
    fund_stakers(system, chain, [a.alice, a.bob])
    system.model_registry.register_model(a.operator, MODEL, a.operator.address, "ipfs://m")
    system.staking.stake(a.alice, MODEL, 500)
    system.staking.stake(a.bob, MODEL, 300)
    with engine.begin() as conn:
        e1 = seed_epoch(conn, 1, [(a.alice.address, 600), (a.bob.address, 400)], status="committed")
        e2 = seed_epoch(conn, 2, [(a.alice.address, 25), (a.carol.address, 75)], status="committed")
        e3 = seed_epoch(conn, 3, [(a.alice.address, 999)], status="committed")
    commits = {e.id: _commit(system, chain, e) for e in (e1, e2, e3)}
    assert all(commits.values())
    system.royalty_distributor.dispute(a.guardian, 3)
    window_end = chain.advance_time(system.royalty_distributor.dispute_window_s() + 1)
    # The settler marks 1 and 2 claimable; 3 still reads claimable here (a stale row), but the
    # indexed dispute keeps it out of every claim.
    for epoch in (1, 2, 3):
        _set_status(engine, epoch, "claimable", window_end - 1)
    follower = make_follower(system, [api_anvil.rpc_url], api_url)
    index_to_head(follower)
    client: TestClient = make_client(manifest=system.manifest)

    response = client.get(f"/v1/contributors/{a.alice.address.lower()}/claim-all")
    assert response.status_code == 200, response.text
    tx = response.json()
    assert tx["to"] == system.royalty_distributor.address
    assert tx["value"] == "0"
    assert tx["chain_id"] == chain.w3.eth.chain_id
    assert [c["epoch"] for c in tx["claims"]] == [1, 2]
    assert tx["total"] == "625"

    token = demo_token(chain.client, system.manifest)
    before = token.balance_of(a.alice.address)
    receipt = _send_signed(chain, a, tx)
    assert receipt["status"] == 1
    assert token.balance_of(a.alice.address) - before == 625

    index_to_head(follower)
    follower.engine.dispose()
    nothing = client.get(f"/v1/contributors/{a.alice.address}/claim-all")
    assert nothing.status_code == 404
    assert nothing.json()["error"]["code"] == "nothing_to_claim"
    royalties = client.get(f"/v1/contributors/{a.alice.address}/royalties").json()
    assert royalties["totals"] == {"earned": "625", "claimed": "625", "claimable": "0"}
    assert {i["epoch"]: i["status"] for i in royalties["items"]}[3] == "disputed"
    assert client.get("/v1/epochs/1").json()["totals"]["claimed"] == "600"

    # The same calldata again: every leaf is claimed, the contract reverts.
    again = _send_signed(chain, a, tx)
    assert again["status"] == 0
    assert token.balance_of(a.alice.address) - before == 625
