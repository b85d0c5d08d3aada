"""The committed contract artifacts are exactly what the committed sources compile to."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from deploy.local.tools import node_binary, node_modules
from settlement.chain.artifacts import (
    SYSTEM_CONTRACTS,
    abi_sha256,
    artifact_names,
    artifacts_dir,
    compiler_manifest,
    load_artifact,
)

CONTRACTS = node_modules().parent
EIP170_MAX_CODE_SIZE = 24_576


def source_path(unit: str) -> Path:
    return node_modules() / unit if unit.startswith("@") else CONTRACTS / unit


def test_recompiling_gives_the_committed_artifacts_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    subprocess.run(
        [node_binary(), str(CONTRACTS / "compile.mjs"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    committed = artifacts_dir()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in committed.iterdir())
    for fresh in sorted(out.iterdir()):
        assert fresh.read_bytes() == (committed / fresh.name).read_bytes(), (
            f"{fresh.name} differs: run `node contracts/compile.mjs` and commit the artifacts"
        )


def test_manifest_hashes_every_source_on_disk() -> None:
    """Cheap first check (no Node): each recorded source hash matches the file."""
    manifest = compiler_manifest()
    assert manifest["compiler"]["version"].startswith("0.8.30+")
    assert manifest["settings"]["optimizer"] == {"enabled": True, "runs": 10_000}
    assert manifest["settings"]["evmVersion"] == "cancun"
    ours = {p.relative_to(CONTRACTS).as_posix() for p in (CONTRACTS / "src").rglob("*.sol")}
    assert ours <= set(manifest["sources"])
    assert any(unit.startswith("@openzeppelin/contracts/") for unit in manifest["sources"])
    for unit, digest in manifest["sources"].items():
        assert hashlib.sha256(source_path(unit).read_bytes()).hexdigest() == digest, unit
    canonical = json.dumps(manifest["sources"], sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest() == manifest["sourcesSha256"]


@pytest.mark.parametrize("name", artifact_names(include_test_only=True))
def test_artifact_loads_with_matching_abi_hash(name: str) -> None:
    artifact = load_artifact(name)  # raises if the recorded ABI hash does not match
    assert abi_sha256(artifact.abi) == compiler_manifest()["contracts"][name]["abiSha256"]
    assert artifact.bytecode.startswith("0x6")
    assert len(artifact.deployed_bytecode) > 2
    assert (len(artifact.deployed_bytecode) - 2) // 2 <= EIP170_MAX_CODE_SIZE
    test_only = artifact.source_name.startswith(("src/test/", "src/bench/"))
    assert artifact.test_only == test_only
    assert (name in SYSTEM_CONTRACTS) == (not test_only)


def test_system_contracts_are_not_test_only() -> None:
    assert set(SYSTEM_CONTRACTS) == set(artifact_names())
    assert load_artifact("MintableERC20").test_only
    assert load_artifact("BaselineDistributor").test_only
