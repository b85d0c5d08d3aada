"""Chain state "as of" a block or a time, read from the projections (what joins and settlement
use).

State at time t is the state after every event in blocks whose timestamp is <= t; at block b,
after every event in blocks <= b. Each projection is a history keyed by log position, so a
lookup is "the newest row at or before the point". By default only *finalized* rows count
(at or below the finalized watermark in the indexer's checkpoint), so a reorg can never change
an answer already given; `finalized_only=False` reads the unfinalized tip too (analytics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from indexer.store import IndexerStore
from schemas.chain import FinalizedWatermark
from schemas.evm import ZERO_ADDRESS
from schemas.tables import metadata

_t = metadata.tables


@dataclass(frozen=True)
class AsOf:
    """A point on the chain: after block `block`, or at unix time `timestamp` (one of them)."""

    block: int | None = None
    timestamp: int | None = None

    def __post_init__(self) -> None:
        if (self.block is None) == (self.timestamp is None):
            raise ValueError("give exactly one of block and timestamp")

    @classmethod
    def at_block(cls, block: int) -> AsOf:
        """After every event of blocks <= `block`."""
        return cls(block=block)

    @classmethod
    def at_time(cls, timestamp: int) -> AsOf:
        """After every event of blocks whose timestamp is <= `timestamp`."""
        return cls(timestamp=timestamp)


@dataclass(frozen=True)
class LicenseState:
    """A license at a point: its immutable terms, holder, and whether it was revoked."""

    license_id: int
    model_id: int
    price_per_unit_e6: int
    expires_at: int
    owner: str | None
    revoked: bool


@dataclass(frozen=True)
class PolicyState:
    """The split in force for a model; `model_id` 0 when it is the default policy."""

    model_id: int
    operator_bps: int
    treasury_bps: int
    contributors_bps: int
    block_number: int
    log_index: int


ProposalStatus = Literal["created", "queued", "executed", "canceled"]
"""Where a proposal's lifecycle events put it: `created` until its first transition. (Whether
a created proposal is pending, active, defeated or succeeded depends on the votes and the
clock, which the Governor works out on chain; the events record only these four.)"""


@dataclass(frozen=True)
class GovernanceProposal:
    """A proposal at a point: its calls and voting window, and its lifecycle status then."""

    proposal_id: int
    proposer: str
    targets: tuple[str, ...]
    values: tuple[int, ...]
    signatures: tuple[str, ...]
    calldatas: tuple[str, ...]
    vote_start: int
    vote_end: int
    description: str
    status: ProposalStatus
    eta_seconds: int | None
    """When it became executable (set once queued)."""
    created_block: int
    status_block: int
    """The block of its latest transition (its creation block while `created`)."""


@dataclass(frozen=True)
class GovernanceVote:
    """One vote cast (`support` 0 against, 1 for, 2 abstain)."""

    proposal_id: int
    voter: str
    support: int
    weight: int
    reason: str
    params: str | None
    block_number: int
    log_index: int


class ChainState:
    """As-of queries over the projections of one chain, through the caller's connection."""

    def __init__(self, connection: Connection, chain_id: int, *, finalized_only: bool = True):
        self.connection = connection
        self.chain_id = chain_id
        self.finalized_only = finalized_only
        self._finalized: FinalizedWatermark | None = None
        if finalized_only:
            checkpoint = IndexerStore(connection, chain_id).checkpoint()
            self._finalized = checkpoint.finalized if checkpoint else None

    def watermark(self) -> FinalizedWatermark | None:
        """The finalized watermark the indexer published (None before the first one)."""
        checkpoint = IndexerStore(self.connection, self.chain_id).checkpoint()
        return checkpoint.finalized if checkpoint else None

    def _bounds(self, table: sa.Table, at: AsOf) -> list[Any]:
        clauses: list[Any] = [table.c.chain_id == self.chain_id]
        if at.block is not None:
            clauses.append(table.c.block_number <= at.block)
        else:
            clauses.append(table.c.block_timestamp <= at.timestamp)
        if self.finalized_only:
            finalized = self._finalized.block_number if self._finalized else -1
            clauses.append(table.c.block_number <= finalized)
        return clauses

    def _latest(self, table_name: str, at: AsOf, *filters: Any) -> Row[Any] | None:
        table = _t[table_name]
        query = (
            sa.select(table)
            .where(*self._bounds(table, at), *filters)
            .order_by(table.c.block_number.desc(), table.c.log_index.desc())
            .limit(1)
        )
        return self.connection.execute(query).one_or_none()

    def _all(self, table_name: str, at: AsOf, *filters: Any) -> list[Row[Any]]:
        table = _t[table_name]
        query = (
            sa.select(table)
            .where(*self._bounds(table, at), *filters)
            .order_by(table.c.block_number, table.c.log_index)
        )
        return list(self.connection.execute(query))

    # --- models --------------------------------------------------------------------------------

    def model_operator(self, model_id: int, at: AsOf) -> str | None:
        """The model's operator, None when not registered."""
        table = _t["chain_model_operators"]
        row = self._latest("chain_model_operators", at, table.c.model_id == model_id)
        return None if row is None else str(row.operator)

    def model_exists(self, model_id: int, at: AsOf) -> bool:
        """Whether the model was registered."""
        return self.model_operator(model_id, at) is not None

    # --- licenses ------------------------------------------------------------------------------

    def license_owner(self, license_id: int, at: AsOf) -> str | None:
        """The license's holder (None before its mint and after a burn)."""
        table = _t["chain_license_owners"]
        row = self._latest("chain_license_owners", at, table.c.license_id == license_id)
        if row is None or row.owner == ZERO_ADDRESS:
            return None
        return str(row.owner)

    def license_revoked(self, license_id: int, at: AsOf) -> bool:
        """Whether the license was revoked."""
        table = _t["chain_license_revocations"]
        return (
            self._latest("chain_license_revocations", at, table.c.license_id == license_id)
            is not None
        )

    def license(self, license_id: int, at: AsOf) -> LicenseState | None:
        """The license's terms, holder and revocation; None when not minted."""
        table = _t["chain_license_terms"]
        terms = self._latest("chain_license_terms", at, table.c.license_id == license_id)
        if terms is None:
            return None
        return LicenseState(
            license_id=license_id,
            model_id=terms.model_id,
            price_per_unit_e6=terms.price_per_unit_e6,
            expires_at=terms.expires_at,
            owner=self.license_owner(license_id, at),
            revoked=self.license_revoked(license_id, at),
        )

    # --- stakes --------------------------------------------------------------------------------

    def stake_of(self, model_id: int, staker: str, at: AsOf) -> int:
        """The staker's counting stake on the model."""
        table = _t["chain_stakes"]
        row = self._latest(
            "chain_stakes", at, table.c.model_id == model_id, table.c.staker == staker
        )
        return 0 if row is None else int(row.stake_after)

    def total_staked(self, model_id: int, at: AsOf) -> int:
        """The model's total counting stake."""
        table = _t["chain_stakes"]
        row = self._latest("chain_stakes", at, table.c.model_id == model_id)
        return 0 if row is None else int(row.total_after)

    def stakes(self, model_id: int, at: AsOf) -> dict[str, int]:
        """Every staker with a non-zero stake on the model."""
        table = _t["chain_stakes"]
        latest: dict[str, int] = {}
        for row in self._all("chain_stakes", at, table.c.model_id == model_id):
            latest[row.staker] = int(row.stake_after)
        return {staker: amount for staker, amount in latest.items() if amount > 0}

    # --- policy and treasury -------------------------------------------------------------------

    def policy(self, model_id: int, at: AsOf) -> PolicyState | None:
        """The model's own split, else the default (model 0); None before any."""
        table = _t["chain_policies"]
        for candidate in (model_id, 0):
            row = self._latest("chain_policies", at, table.c.model_id == candidate)
            if row is not None:
                return PolicyState(
                    candidate,
                    row.operator_bps,
                    row.treasury_bps,
                    row.contributors_bps,
                    row.block_number,
                    row.log_index,
                )
        return None

    def treasury(self, at: AsOf) -> str | None:
        """Where the treasury share goes."""
        row = self._latest("chain_treasuries", at)
        return None if row is None else str(row.treasury)

    # --- distributor ---------------------------------------------------------------------------

    def epoch_committed(self, epoch: int, at: AsOf) -> Row[Any] | None:
        """The epoch's `EpochCommitted` row."""
        table = _t["chain_distributor_epochs"]
        return self._latest("chain_distributor_epochs", at, table.c.epoch == epoch)

    def claimed(self, epoch: int, at: AsOf) -> dict[int, int]:
        """Claimed amount by leaf index of the epoch."""
        table = _t["chain_claims"]
        return {
            int(r.leaf_index): int(r.amount)
            for r in self._all("chain_claims", at, table.c.epoch == epoch)
        }

    # --- governance ----------------------------------------------------------------------------

    def proposals(self, at: AsOf) -> list[GovernanceProposal]:
        """Every proposal created at or before the point, in creation order, each with its
        status as of the point (its latest queued/executed/canceled transition, if any)."""
        transitions: dict[int, Row[Any]] = {}
        etas: dict[int, int] = {}
        for row in self._all("chain_proposal_transitions", at):
            proposal_id = int(row.proposal_id)
            transitions[proposal_id] = row  # chain order: the last one wins
            if row.eta_seconds is not None:
                etas[proposal_id] = int(row.eta_seconds)
        return [
            self._proposal(row, transitions.get(int(row.proposal_id)), etas)
            for row in self._all("chain_proposals", at)
        ]

    def proposal(self, proposal_id: int, at: AsOf) -> GovernanceProposal | None:
        """One proposal as of the point; None when not created by then."""
        table = _t["chain_proposals"]
        row = self._latest("chain_proposals", at, table.c.proposal_id == proposal_id)
        if row is None:
            return None
        transitions = _t["chain_proposal_transitions"]
        history = self._all(
            "chain_proposal_transitions", at, transitions.c.proposal_id == proposal_id
        )
        etas = {
            int(t.proposal_id): int(t.eta_seconds) for t in history if t.eta_seconds is not None
        }
        return self._proposal(row, history[-1] if history else None, etas)

    @staticmethod
    def _proposal(
        row: Row[Any], transition: Row[Any] | None, etas: dict[int, int]
    ) -> GovernanceProposal:
        proposal_id = int(row.proposal_id)
        status: ProposalStatus = "created" if transition is None else transition.status
        return GovernanceProposal(
            proposal_id=proposal_id,
            proposer=str(row.proposer),
            targets=tuple(row.targets),
            values=tuple(int(v) for v in row.values),
            signatures=tuple(row.signatures),
            calldatas=tuple(row.calldatas),
            vote_start=int(row.vote_start),
            vote_end=int(row.vote_end),
            description=str(row.description),
            status=status,
            eta_seconds=etas.get(proposal_id),
            created_block=int(row.block_number),
            status_block=int(row.block_number if transition is None else transition.block_number),
        )

    def votes(self, proposal_id: int, at: AsOf) -> list[GovernanceVote]:
        """The votes cast on the proposal at or before the point, in chain order."""
        table = _t["chain_votes"]
        return [
            GovernanceVote(
                proposal_id=int(r.proposal_id),
                voter=str(r.voter),
                support=int(r.support),
                weight=int(r.weight),
                reason=str(r.reason),
                params=None if r.params is None else str(r.params),
                block_number=int(r.block_number),
                log_index=int(r.log_index),
            )
            for r in self._all("chain_votes", at, table.c.proposal_id == proposal_id)
        ]

    def vote_totals(self, proposal_id: int, at: AsOf) -> dict[int, int]:
        """Weight cast per `support` value (0 against, 1 for, 2 abstain) as of the point."""
        totals: dict[int, int] = {}
        for vote in self.votes(proposal_id, at):
            totals[vote.support] = totals.get(vote.support, 0) + vote.weight
        return totals
