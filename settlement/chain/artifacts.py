"""The compiled contracts, loaded from the committed artifacts (no Node needed at run time).

`node contracts/compile.mjs` writes one JSON file per contract (ABI, creation and runtime
bytecode, the ABI's hash) and a `manifest.json` (compiler, settings, the hash of every source)
into `contracts/artifacts/`. A wheel may carry them as package data under
`settlement/chain/_artifacts/`, which is looked at first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from settlement.chain.errors import ArtifactError

#: The contracts of a deployed system (everything else in the artifacts is test-only).
SYSTEM_CONTRACTS: tuple[str, ...] = (
    "GovernanceToken",
    "RoyaltyTimelock",
    "RoyaltyGovernor",
    "ModelRegistry",
    "LicenseNFT",
    "Staking",
    "RoyaltyPolicy",
    "RoyaltyDistributor",
)

#: The mintable ERC-20 deployed as payment token on local chains (test-only artifact).
DEMO_TOKEN_CONTRACT = "MintableERC20"  # noqa: S105 - a contract name, not a secret

ABI = list[dict[str, Any]]


def artifacts_dir() -> Path:
    """Where the artifacts are: packaged copy if present, else the repository's folder."""
    packaged = Path(__file__).resolve().parent / "_artifacts"
    if (packaged / "manifest.json").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "contracts" / "artifacts"


def abi_sha256(abi: ABI) -> str:
    """sha256 (hex) of the ABI's canonical JSON: keys sorted, no whitespace.

    The same function as `canonicalJson` + sha256 in contracts/compile.mjs, so the hash in an
    artifact, in the deployment manifest and computed here always agree.
    """
    text = json.dumps(abi, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One compiled contract."""

    name: str
    source_name: str
    test_only: bool
    abi: ABI
    bytecode: str
    deployed_bytecode: str
    abi_sha256: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} missing; run `node contracts/compile.mjs`") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return data


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of contract `name`, checked against its recorded ABI hash."""
    data = _read_json(artifacts_dir() / f"{name}.json")
    try:
        artifact = Artifact(
            name=data["contractName"],
            source_name=data["sourceName"],
            test_only=bool(data["testOnly"]),
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            abi_sha256=data["abiSha256"],
        )
    except KeyError as exc:
        raise ArtifactError(f"artifact {name}: field {exc} missing") from exc
    if artifact.name != name:
        raise ArtifactError(f"artifact {name}.json holds contract {artifact.name}")
    if abi_sha256(artifact.abi) != artifact.abi_sha256:
        raise ArtifactError(f"artifact {name}: ABI does not match its recorded hash")
    return artifact


@lru_cache(maxsize=1)
def compiler_manifest() -> dict[str, Any]:
    """contracts/artifacts/manifest.json: compiler version, settings, source and ABI hashes."""
    return _read_json(artifacts_dir() / "manifest.json")


def artifact_names(*, include_test_only: bool = False) -> tuple[str, ...]:
    """Names of the compiled contracts, sorted; test-only ones only when asked."""
    contracts: dict[str, dict[str, Any]] = compiler_manifest()["contracts"]
    return tuple(sorted(n for n, c in contracts.items() if include_test_only or not c["testOnly"]))
