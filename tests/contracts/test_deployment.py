"""`royalty deploy`, the deployment manifest, and proofs made by OpenZeppelin's own library."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from web3 import Web3

from deploy.local import Anvil
from deploy.local.tools import node_binary, node_modules
from royalty.cli import app
from settlement.chain import (
    ChainClient,
    Claim,
    DeploymentManifest,
    ManifestError,
    MintableToken,
    System,
    check_wiring,
    dev_account,
    load_artifact,
)
from settlement.chain.manifest import CONTRACT_KEYS
from tests.contracts.contract_helpers import LEAF_ENCODING, ChainHarness, Distribution

pytestmark = pytest.mark.anvil


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration from the environment or a royalty.toml leaks into the command."""
    monkeypatch.chdir(tmp_path)
    for name in ("ROYALTY_CONFIG_FILE", "ROYALTY_DEPLOYER_PRIVATE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ROYALTY_CHAIN_SETTLER_PRIVATE_KEY", raising=False)


@pytest.fixture
def other_chain(tmp_path: Path) -> Iterator[Anvil]:
    """A second anvil that is not the dev chain id."""
    chain = Anvil(tmp_path / "anvil-1337", chain_id=1337).start()
    yield chain
    chain.stop()


def test_deploy_command_writes_a_manifest(
    chain: ChainHarness, tmp_path: Path, clean_env: None
) -> None:
    out = tmp_path / "var" / "deployment.json"
    before = chain.w3.eth.block_number

    result = CliRunner().invoke(
        app, ["deploy", "--rpc-url", chain.anvil.rpc_url, "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    manifest = DeploymentManifest.load(out)
    assert manifest.chain_id == 31337
    assert manifest.deploy_block == before + 1
    assert set(manifest.contracts) == set(CONTRACT_KEYS)
    roles = manifest.roles
    assert roles.deployer == dev_account(0).address
    assert (roles.settler, roles.guardian, roles.treasury) == tuple(
        dev_account(i).address for i in (1, 2, 3)
    )
    assert manifest.parameters.dispute_window_s == 3_600  # the epochs setting's default
    for record in manifest.contracts.values():
        assert record.abi_sha256 == load_artifact(record.contract).abi_sha256
        assert record.block is not None
        assert record.block >= manifest.deploy_block
        assert chain.w3.eth.get_code(record.address) != b""
    for key in ("model_registry", "royalty_policy"):  # no immutables: code equals the artifact
        record = manifest.contracts[key]
        code = "0x" + chain.w3.eth.get_code(record.address).hex()
        assert code == load_artifact(record.contract).deployed_bytecode
    check_wiring(chain.client, manifest)
    system = System.connect(chain.client, manifest)
    assert system.payment_token.balance_of(roles.settler) == 1_000_000 * 10**6
    assert system.governance_token.get_votes(roles.deployer) == 10**24
    assert "manifest written to" in result.output


def test_deploy_off_the_dev_chain_needs_keys_addresses_and_a_token(
    other_chain: Anvil, tmp_path: Path, clean_env: None
) -> None:
    out = tmp_path / "deployment.json"
    base = ["deploy", "--rpc-url", other_chain.rpc_url, "--out", str(out)]
    runner = CliRunner()
    key = "0x" + dev_account(0).key.hex().removeprefix("0x")

    result = runner.invoke(app, base)
    assert result.exit_code == 2
    assert "not the dev chain" in result.output

    result = runner.invoke(app, [*base, "--private-key", key])
    assert result.exit_code == 2
    assert "--settler is required" in result.output

    addresses = []
    for flag, i in (("--settler", 1), ("--guardian", 2), ("--treasury", 3)):
        addresses += [flag, dev_account(i).address]
    result = runner.invoke(app, [*base, "--private-key", key, *addresses])
    assert result.exit_code == 2
    assert "pass an existing payment token" in result.output
    assert not out.exists()

    client = ChainClient.connect(other_chain.rpc_url)
    token = MintableToken.deploy(client, dev_account(0), "USD", "USD", 6, dev_account(0).address)
    result = runner.invoke(
        app,
        [*base, *addresses, "--payment-token", token.address],
        env={"ROYALTY_DEPLOYER_PRIVATE_KEY": key},
    )
    assert result.exit_code == 0, result.output
    manifest = DeploymentManifest.load(out)
    assert manifest.chain_id == 1337
    assert manifest.contracts["payment_token"].address == token.address
    assert manifest.contracts["payment_token"].abi_sha256 is None  # external contract
    check_wiring(client, manifest)


def test_manifest_refuses_another_chain_or_another_abi(
    chain: ChainHarness, system: System, tmp_path: Path
) -> None:
    manifest = system.manifest
    path = tmp_path / "deployment.json"
    manifest.write(path)
    assert DeploymentManifest.load(path) == manifest

    with pytest.raises(ManifestError, match="chain 1"):
        System.connect(chain.client, manifest.model_copy(update={"chain_id": 1}))
    record = manifest.contracts["royalty_distributor"]
    tampered = dict(manifest.contracts)
    tampered["royalty_distributor"] = record.model_copy(update={"abi_sha256": "00" * 32})
    with pytest.raises(ManifestError, match="redeploy"):
        System.connect(chain.client, manifest.model_copy(update={"contracts": tampered}))
    with pytest.raises(ManifestError, match="royalty deploy"):
        DeploymentManifest.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"chain_id": "x"}')
    with pytest.raises(ManifestError):
        DeploymentManifest.load(tmp_path / "bad.json")


def test_proofs_from_openzeppelin_merkle_tree_claim_on_chain(
    system: System, chain: ChainHarness
) -> None:
    """The contract accepts what the npm StandardMerkleTree builds, as third parties will."""
    a = chain.actors
    payouts = [(a.alice.address, 11), (a.bob.address, 22), (a.carol.address, 33)]
    ours = Distribution.of(payouts)
    values = [[str(i), account, str(amount)] for i, account, amount in ours.leaves]
    script = (
        "const {StandardMerkleTree} = require('@openzeppelin/merkle-tree');"
        "const v = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        f"const t = StandardMerkleTree.of(v, {json.dumps(list(LEAF_ENCODING))});"
        "console.log(JSON.stringify({root: t.root, proofs: v.map((_, i) => t.getProof(i))}));"
    )
    done = subprocess.run(
        [node_binary(), "-e", script],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
        cwd=node_modules().parent,
        timeout=60,
    )
    oz = json.loads(done.stdout)
    assert oz["root"] == "0x" + ours.root.hex()

    d = system.royalty_distributor
    system.payment_token.approve(a.settler, d.address, ours.total)
    d.commit_epoch(
        a.settler, 1, Web3.to_bytes(hexstr=oz["root"]), ours.total, b"\0" * 32, b"\0" * 32
    )
    chain.advance_time(d.dispute_window_s())
    claims = [
        Claim(1, i, account, amount, tuple(Web3.to_bytes(hexstr=p) for p in oz["proofs"][i]))
        for i, account, amount in ours.leaves
    ]
    d.claim_many(a.mallory, claims)
    assert [system.payment_token.balance_of(acct) for _, acct, _ in ours.leaves] == [11, 22, 33]
