"""Errors of the chain adapter (contracts, transactions, deployment manifests).

Each one also belongs to one of the settlement families of `settlement.errors`, so callers can
react by family: `InvalidInputError` (retrying the same call fails again: a contract refused
it, a manifest is wrong), `InvariantViolation` (our own build is broken: artifacts do not match
their recorded hashes) or `RetryableError` (the node is unreachable or slow).
"""

from __future__ import annotations

from typing import Any

from settlement.errors import (
    InvalidInputError,
    InvariantViolation,
    RetryableError,
    SettlementError,
)


class ChainError(SettlementError):
    """Base class of every error raised by `settlement.chain`."""


class ArtifactError(ChainError, InvariantViolation):
    """A compiled contract artifact is missing or does not match its recorded hash.

    The artifacts are committed with the sources; this means the checkout or the package is
    broken (recompile with `node contracts/compile.mjs`), never that the caller erred.
    """


class ManifestError(ChainError, InvalidInputError):
    """A deployment manifest is missing, malformed, or does not describe the connected chain."""


class DeploymentConfigError(ChainError, InvalidInputError):
    """The deployment was asked for something unsafe or incomplete (e.g. no key off anvil)."""


class ContractRevertError(ChainError, InvalidInputError):
    """A contract refused a call or transaction; `error_name`/`error_args` say why.

    `error_name` is the Solidity custom error (e.g. `AlreadyClaimed`), `Error` for a revert
    string, `Panic` for a panic code, or `unknown` when the revert data cannot be decoded;
    `data` is the raw revert data.
    """

    def __init__(
        self, error_name: str, error_args: tuple[Any, ...], data: bytes, context: str = ""
    ) -> None:
        self.error_name = error_name
        self.error_args = error_args
        self.data = data
        self.context = context
        where = f"{context}: " if context else ""
        super().__init__(f"{where}reverted with {error_name}{error_args!r}")


class TransactionTimeoutError(ChainError, RetryableError):
    """A sent transaction was not mined in time; it may still be mined later (check first)."""


class ChainUnavailableError(ChainError, RetryableError):
    """The JSON-RPC endpoint could not be reached or answered with a transport error."""


class WiringError(ChainError, InvariantViolation):
    """A freshly deployed system's roles, read back from the chain, are not as deployed."""
