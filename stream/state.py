"""The point-in-time chain state port the join reads, and an in-memory implementation.

State at time t is the state after every *finalized* chain event in blocks whose timestamp is
<= t (DESIGN.md, "Money and time"). The join asks only the questions below; adapters answer
them from the indexer's projections (`stream.sqlalchemy_chain_state`), from faust tables, or
from memory (`MemoryChainView`, used by the property tests and as the model for the tables).
Pure: no database, Kafka or web3 here.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from schemas.chain import ChainPosition

NO_CHANGE = ChainPosition(0, 0)
"""The state interval of a model whose split inputs never changed on the finalized chain."""


@dataclass(frozen=True, slots=True)
class LicenseView:
    """A license at a point in time: immutable terms, holder (None after a burn), revocation."""

    license_id: int
    model_id: int
    price_per_unit_e6: int
    expires_at: int
    owner: str | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class PolicyView:
    """The split in force for a model (its own, else the default policy), in basis points."""

    operator_bps: int
    treasury_bps: int
    contributors_bps: int


class ChainView(Protocol):
    """Finalized chain state as of a unix time: the port of the join core.

    Every method answers for the state after all finalized events in blocks with timestamp
    <= `t`. `finalized_time` bounds what can be asked: the join holds an event whose time is
    not strictly before it, because a block not yet final may still share that second.
    """

    def finalized_time(self) -> int | None:
        """Timestamp of the newest finalized block (None before any block is final)."""
        ...

    def model_operator(self, model_id: int, t: int) -> str | None:
        """The model's operator, None when the model is not registered."""
        ...

    def license(self, license_id: int, t: int) -> LicenseView | None:
        """The license's terms, holder and revocation; None when not minted."""
        ...

    def policy(self, model_id: int, t: int) -> PolicyView | None:
        """The model's split, the default policy when it has none; None before any policy."""
        ...

    def state_interval(self, model_id: int, t: int) -> ChainPosition:
        """Chain position of the newest change, at or before t, of anything that splits the
        model's fees: its policy in force, its stakes, its operator, the treasury.
        `NO_CHANGE` when there is none. Equal intervals split identically."""
        ...


V = TypeVar("V")


@dataclass
class _History(Generic[V]):
    """Values of one key in chain order, each stamped with its block timestamp."""

    times: list[int] = field(default_factory=list)
    entries: list[tuple[ChainPosition, V]] = field(default_factory=list)

    def append(self, position: ChainPosition, timestamp: int, value: V) -> None:
        if self.entries and (timestamp, position) < (self.times[-1], self.entries[-1][0]):
            raise ValueError("chain changes must be recorded in chain order")
        self.times.append(timestamp)
        self.entries.append((position, value))

    def at(self, t: int) -> tuple[ChainPosition, V] | None:
        index = bisect_right(self.times, t)
        return self.entries[index - 1] if index else None


_NONE: _History[object] = _History()
"""The history of a key with no changes (shared, never appended to)."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where and when a chain change happened: its log position and block timestamp."""

    block_number: int
    log_index: int
    timestamp: int

    @property
    def position(self) -> ChainPosition:
        return ChainPosition(self.block_number, self.log_index)


@dataclass(frozen=True, slots=True)
class _Terms:
    model_id: int
    price_per_unit_e6: int
    expires_at: int


class MemoryChainView:
    """A `ChainView` over change histories held in memory, recorded in chain order.

    Every recorded change counts as finalized; `finalize(timestamp)` moves the watermark.
    """

    def __init__(self) -> None:
        self._finalized: int | None = None
        self._operators: dict[int, _History[str]] = {}
        self._terms: dict[int, _Terms] = {}
        self._minted: dict[int, int] = {}
        self._owners: dict[int, _History[str | None]] = {}
        self._revoked: dict[int, int] = {}
        self._policies: dict[int, _History[PolicyView]] = {}
        self._stakes: dict[int, _History[dict[str, int]]] = {}
        self._treasury: _History[str] = _History()

    # --- recording ----------------------------------------------------------------------------

    def finalize(self, timestamp: int) -> None:
        """The newest finalized block now has this timestamp."""
        self._finalized = timestamp

    def set_operator(self, model_id: int, operator: str, at: Stamp) -> None:
        """A model registered, or its operator transferred."""
        self._operators.setdefault(model_id, _History()).append(at.position, at.timestamp, operator)

    def mint(
        self, license_id: int, model_id: int, price: int, expires_at: int, owner: str, at: Stamp
    ) -> None:
        """A license minted with its immutable terms."""
        self._terms[license_id] = _Terms(model_id, price, expires_at)
        self._minted[license_id] = at.timestamp
        self.transfer(license_id, owner, at)

    def transfer(self, license_id: int, owner: str | None, at: Stamp) -> None:
        """A license changed hands (None: burned)."""
        self._owners.setdefault(license_id, _History()).append(at.position, at.timestamp, owner)

    def revoke(self, license_id: int, at: Stamp) -> None:
        """The model's operator revoked a license."""
        self._revoked.setdefault(license_id, at.timestamp)

    def set_policy(self, model_id: int, policy: PolicyView, at: Stamp) -> None:
        """A policy set for a model (model 0: the default policy)."""
        self._policies.setdefault(model_id, _History()).append(at.position, at.timestamp, policy)

    def set_stake(self, model_id: int, staker: str, stake_after: int, at: Stamp) -> None:
        """A staker's counting stake on a model changed to `stake_after`."""
        history = self._stakes.setdefault(model_id, _History())
        latest = history.entries[-1][1] if history.entries else {}
        history.append(at.position, at.timestamp, {**latest, staker: stake_after})

    def set_treasury(self, treasury: str, at: Stamp) -> None:
        """The treasury address changed."""
        self._treasury.append(at.position, at.timestamp, treasury)

    # --- ChainView ----------------------------------------------------------------------------

    def finalized_time(self) -> int | None:
        return self._finalized

    def model_operator(self, model_id: int, t: int) -> str | None:
        history = self._operators.get(model_id)
        found = None if history is None else history.at(t)
        return None if found is None else found[1]

    def license(self, license_id: int, t: int) -> LicenseView | None:
        terms = self._terms.get(license_id)
        if terms is None or self._minted[license_id] > t:
            return None
        owner = self._owners[license_id].at(t)
        revoked_at = self._revoked.get(license_id)
        return LicenseView(
            license_id=license_id,
            model_id=terms.model_id,
            price_per_unit_e6=terms.price_per_unit_e6,
            expires_at=terms.expires_at,
            owner=None if owner is None else owner[1],
            revoked=revoked_at is not None and revoked_at <= t,
        )

    def _policy_entry(self, model_id: int, t: int) -> tuple[ChainPosition, PolicyView] | None:
        for candidate in (model_id, 0):
            history = self._policies.get(candidate)
            found = None if history is None else history.at(t)
            if found is not None:
                return found
        return None

    def policy(self, model_id: int, t: int) -> PolicyView | None:
        found = self._policy_entry(model_id, t)
        return None if found is None else found[1]

    def stakes(self, model_id: int, t: int) -> dict[str, int]:
        """Stakers with a non-zero stake on the model (for tests that split)."""
        history = self._stakes.get(model_id)
        found = None if history is None else history.at(t)
        return {} if found is None else {s: v for s, v in found[1].items() if v > 0}

    def state_interval(self, model_id: int, t: int) -> ChainPosition:
        latest = NO_CHANGE
        for found in (
            self._policy_entry(model_id, t),
            self._stakes.get(model_id, _NONE).at(t),
            self._operators.get(model_id, _NONE).at(t),
            self._treasury.at(t),
        ):
            if found is not None and found[0] > latest:
                latest = found[0]
        return latest


class MemoizedChainView:
    """A `ChainView` remembering every answer of the view it wraps, for one batch.

    A batch asks the same questions many times (thousands of events per second share a model,
    a license and a second), and the answers of a finalized view do not change while it is
    read: each distinct question reaches the wrapped view once. Build one per batch, so a view
    whose watermark moves between batches is asked again.
    """

    def __init__(self, view: ChainView) -> None:
        self._view = view
        self._finalized = view.finalized_time()
        self._operators: dict[tuple[int, int], str | None] = {}
        self._licenses: dict[tuple[int, int], LicenseView | None] = {}
        self._policies: dict[tuple[int, int], PolicyView | None] = {}
        self._intervals: dict[tuple[int, int], ChainPosition] = {}

    def finalized_time(self) -> int | None:
        return self._finalized

    def model_operator(self, model_id: int, t: int) -> str | None:
        key = (model_id, t)
        try:
            return self._operators[key]
        except KeyError:
            found = self._operators[key] = self._view.model_operator(model_id, t)
            return found

    def license(self, license_id: int, t: int) -> LicenseView | None:
        key = (license_id, t)
        try:
            return self._licenses[key]
        except KeyError:
            found = self._licenses[key] = self._view.license(license_id, t)
            return found

    def policy(self, model_id: int, t: int) -> PolicyView | None:
        key = (model_id, t)
        try:
            return self._policies[key]
        except KeyError:
            found = self._policies[key] = self._view.policy(model_id, t)
            return found

    def state_interval(self, model_id: int, t: int) -> ChainPosition:
        key = (model_id, t)
        try:
            return self._intervals[key]
        except KeyError:
            found = self._intervals[key] = self._view.state_interval(model_id, t)
            return found
