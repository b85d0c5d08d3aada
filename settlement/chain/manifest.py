"""The deployment manifest: where a deployed system lives, as the indexer and settler read it.

Written by `royalty deploy` (see `deployment.py`), read by every component that talks to the
contracts. It records the chain id, the block to start indexing from, each contract's address
with the hash of the ABI it was deployed with, the role holders and the deployment parameters.
Amounts are decimal strings, as everywhere in our JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from eth_typing import ChecksumAddress
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from web3 import Web3

from settlement.chain.artifacts import load_artifact
from settlement.chain.errors import ManifestError

#: Logical names of the contracts in a manifest, in deployment order.
CONTRACT_KEYS: tuple[str, ...] = (
    "payment_token",
    "governance_token",
    "timelock",
    "governor",
    "model_registry",
    "license_nft",
    "staking",
    "royalty_policy",
    "royalty_distributor",
)


def _checksum(value: str) -> str:
    if not Web3.is_address(value):
        raise ValueError(f"not an address: {value!r}")
    return str(Web3.to_checksum_address(value))


class ContractRecord(BaseModel):
    """One contract of the system."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contract: str
    """Artifact name (`MintableERC20`, `RoyaltyDistributor`...)."""
    address: str
    abi_sha256: str | None
    """sha256 of the canonical ABI deployed; None for a pre-existing (external) contract."""
    block: int | None
    """Block of the deployment transaction; None for an external contract."""

    _address = field_validator("address")(_checksum)


class Roles(BaseModel):
    """Who holds what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployer: str
    settler: str
    guardian: str
    treasury: str
    governance: str
    """The timelock: owner of RoyaltyPolicy, admin of RoyaltyDistributor."""
    governor: str

    _addresses = field_validator("*")(_checksum)


class Parameters(BaseModel):
    """The deployment's settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dispute_window_s: int
    sweep_delay_s: int
    stake_cooldown_s: int
    voting_delay_blocks: int
    voting_period_blocks: int
    proposal_threshold: str
    quorum_percent: int
    timelock_delay_s: int
    governance_supply: str
    default_policy_bps: tuple[int, int, int]
    """(operator, treasury, contributors) of model 0, the default."""


class Compiler(BaseModel):
    """Which build of the contracts was deployed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    solc: str
    sources_sha256: str


class DeploymentManifest(BaseModel):
    """A deployed system: chain, start block, contracts, roles, parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    chain_id: int
    deploy_block: int
    """First block of the deployment: the indexer starts here."""
    contracts: dict[str, ContractRecord]
    roles: Roles
    parameters: Parameters
    compiler: Compiler

    @field_validator("contracts")
    @classmethod
    def _complete(cls, v: dict[str, ContractRecord]) -> dict[str, ContractRecord]:
        missing = [k for k in CONTRACT_KEYS if k not in v]
        if missing:
            raise ValueError(f"contracts missing: {missing}")
        return v

    def address(self, key: str) -> ChecksumAddress:
        """The address of contract `key` (one of CONTRACT_KEYS)."""
        try:
            return Web3.to_checksum_address(self.contracts[key].address)
        except KeyError as exc:
            raise ManifestError(f"no contract {key!r} in the manifest") from exc

    def check_artifacts(self) -> None:
        """Raise `ManifestError` if a contract was deployed with an ABI other than ours now."""
        for key, record in self.contracts.items():
            if record.abi_sha256 is None:
                continue
            current = load_artifact(record.contract).abi_sha256
            if current != record.abi_sha256:
                raise ManifestError(
                    f"{key} ({record.contract}) was deployed with ABI {record.abi_sha256[:12]}, "
                    f"the artifacts now have {current[:12]}: redeploy or check out that build"
                )

    def dumps(self) -> str:
        """The manifest as JSON text (stable key order)."""
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def write(self, path: Path) -> None:
        """Write atomically (temp file + rename), creating the folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.dumps())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def loads(cls, text: str) -> DeploymentManifest:
        """Parse manifest JSON; raises `ManifestError` when malformed."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ManifestError(f"invalid deployment manifest: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> DeploymentManifest:
        """Read a manifest file; raises `ManifestError` when missing or malformed."""
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise ManifestError(f"{path}: no deployment manifest (run `royalty deploy`)") from exc
        return cls.loads(text)
