"""Governance: the ERC20Votes token, the Governor and the timelock that executes proposals."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.types import TxReceipt

from settlement.chain.base import BoundContract
from settlement.chain.tokens import ERC20Token


class ProposalState(IntEnum):
    """OpenZeppelin `IGovernor.ProposalState`."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7


class VoteType(IntEnum):
    """OpenZeppelin `GovernorCountingSimple.VoteType`."""

    AGAINST = 0
    FOR = 1
    ABSTAIN = 2


@dataclass(frozen=True)
class Proposal:
    """The calls a proposal makes, and its description (together they identify it)."""

    targets: tuple[str, ...]
    calldatas: tuple[bytes, ...]
    description: str
    values: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.values:
            object.__setattr__(self, "values", (0,) * len(self.targets))

    @property
    def description_hash(self) -> bytes:
        """keccak256 of the description, as queue/execute take it."""
        return keccak(text=self.description)

    def args(self) -> tuple[list[str], list[int], list[bytes]]:
        """(targets, values, calldatas) as the Governor's functions take them."""
        return (list(self.targets), list(self.values), list(self.calldatas))


class GovernanceToken(ERC20Token):
    """Typed wrapper of `GovernanceToken.sol` (ERC20Votes)."""

    artifact_name = "GovernanceToken"

    def delegate(self, sender: LocalAccount, delegatee: str) -> TxReceipt:
        """Delegate `sender`'s votes (to itself to vote directly)."""
        return self._send(sender, "delegate", delegatee)

    def get_votes(self, account: str) -> int:
        """Current voting power of `account`."""
        return int(self._call("getVotes", account))


class RoyaltyTimelock(BoundContract):
    """Typed wrapper of `RoyaltyTimelock.sol` (OpenZeppelin TimelockController)."""

    artifact_name = "RoyaltyTimelock"

    def min_delay(self) -> int:
        """Seconds between queue and execute."""
        return int(self._call("getMinDelay"))

    def has_role(self, role: bytes, account: str) -> bool:
        """Whether `account` holds `role`."""
        return bool(self._call("hasRole", role, account))

    def role(self, name: str) -> bytes:
        """The id of role `name` (e.g. "PROPOSER_ROLE")."""
        return bytes(self._call(name))


class RoyaltyGovernor(BoundContract):
    """Typed wrapper of `RoyaltyGovernor.sol` (OpenZeppelin Governor + timelock control)."""

    artifact_name = "RoyaltyGovernor"

    def propose(self, sender: LocalAccount, proposal: Proposal) -> int:
        """Create the proposal; returns its id."""
        receipt = self._send(sender, "propose", *proposal.args(), proposal.description)
        (created,) = self.events(receipt, "ProposalCreated")
        return int(created["proposalId"])

    def proposal_id(self, proposal: Proposal) -> int:
        """The id of `proposal` (a hash of its calls and description)."""
        return int(self._call("hashProposal", *proposal.args(), proposal.description_hash))

    def cast_vote(
        self, sender: LocalAccount, proposal_id: int, support: VoteType, reason: str = ""
    ) -> TxReceipt:
        """Vote on an active proposal."""
        if reason:
            return self._send(sender, "castVoteWithReason", proposal_id, int(support), reason)
        return self._send(sender, "castVote", proposal_id, int(support))

    def queue(self, sender: LocalAccount, proposal: Proposal) -> TxReceipt:
        """Queue a succeeded proposal in the timelock."""
        return self._send(sender, "queue", *proposal.args(), proposal.description_hash)

    def execute(self, sender: LocalAccount, proposal: Proposal) -> TxReceipt:
        """Execute a queued proposal once the timelock delay has passed."""
        return self._send(sender, "execute", *proposal.args(), proposal.description_hash)

    def state(self, proposal_id: int) -> ProposalState:
        """The proposal's state."""
        return ProposalState(int(self._call("state", proposal_id)))

    def proposal_snapshot(self, proposal_id: int) -> int:
        """The block at which voting power is read (voting starts after it)."""
        return int(self._call("proposalSnapshot", proposal_id))

    def proposal_deadline(self, proposal_id: int) -> int:
        """The last block of the voting period."""
        return int(self._call("proposalDeadline", proposal_id))

    def proposal_eta(self, proposal_id: int) -> int:
        """When a queued proposal may execute (unix seconds), 0 if not queued."""
        return int(self._call("proposalEta", proposal_id))

    def voting_delay(self) -> int:
        """Blocks between proposal and vote start."""
        return int(self._call("votingDelay"))

    def voting_period(self) -> int:
        """Blocks of voting."""
        return int(self._call("votingPeriod"))

    def timelock(self) -> ChecksumAddress:
        """The executing timelock."""
        return Web3.to_checksum_address(self._call("timelock"))
