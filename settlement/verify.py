"""`royalty verify`: recompute an epoch from public inputs and compare it with what was recorded.

Public inputs only (never the accruals' own prices or splits):

- the usage records the epoch bills: the `usage_events` rows of the usage ids whose accrual has
  `settled_epoch == epoch`;
- each record re-priced from the indexed chain state at its event time (`indexer.asof`, through
  the join's own view `stream.sqlalchemy_chain_state.SqlAlchemyChainView`): the license's price,
  holder, model, expiry and revocation, the model's operator and policy, and the state interval;
- the stakes and treasury of each interval, and the carries of the previous epochs, exactly as
  `settlement.epoch_inputs` reads them.

From those, `compute_distribution` gives the distribution; its usage root, inputs hash, Merkle
root and total are compared with (a) the `epochs` row, its `epoch_allocations` and its
`recipient_carries`, and (b) the chain: `RoyaltyDistributor.epochInfo` (root, total) and the
indexed `EpochCommitted` event (`chain_distributor_epochs`: inputs hash, usage root, root,
total). The comparison (`build_report`) is pure; `VerifyReport` lists every check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from indexer.asof import AsOf, ChainState
from schemas.epoch import EpochStatus
from schemas.tables import metadata
from settlement.chain.distributor import EpochInfo
from settlement.distribution import (
    LEAF_ENCODING,
    ZERO_ROOT,
    EpochDistribution,
    compute_distribution,
)
from settlement.epoch_inputs import (
    EpochInputs,
    GroupTotals,
    attach_chain_state,
    load_carries_in,
)
from settlement.merkle import MerkleTree
from settlement.usage_root import UsageRecord, usage_root
from stream.sqlalchemy_chain_state import SqlAlchemyChainView

_t = metadata.tables

#: Statuses whose epoch has a distribution to verify.
COMPUTED_STATUSES = frozenset(
    {EpochStatus.COMPUTED, EpochStatus.COMMITTED, EpochStatus.CLAIMABLE, EpochStatus.DISPUTED}
)
#: Statuses whose epoch was committed on-chain.
COMMITTED_STATUSES = COMPUTED_STATUSES - {EpochStatus.COMPUTED}


class EpochNotReadyError(Exception):
    """The epoch does not exist or is not computed yet: there is nothing to verify."""


@dataclass(frozen=True)
class Check:
    """One comparison: what the recomputation gives (`expected`) and what was recorded."""

    name: str
    expected: str
    actual: str
    ok: bool

    @classmethod
    def equal(cls, name: str, expected: object, actual: object) -> Check:
        """A check that passes when both sides are equal."""
        return cls(name, _text(expected), _text(actual), expected == actual)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "expected": self.expected, "actual": self.actual, "ok": self.ok}


@dataclass(frozen=True)
class VerifyReport:
    """The checks of one epoch; it verifies when every check passes."""

    epoch: int
    status: str
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def check(self, name: str) -> Check:
        """The check called `name`."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "status": self.status,
            "ok": self.ok,
            "checks": [check.to_json() for check in self.checks],
            "notes": list(self.notes),
        }


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


# --- recomputation from public inputs ----------------------------------------------------------


@dataclass(frozen=True)
class Recomputed:
    """An epoch recomputed from public inputs."""

    inputs: EpochInputs
    distribution: EpochDistribution
    billed: int
    """Usage ids the epoch bills (accruals with `settled_epoch == epoch`)."""
    unpriced: dict[str, str] = field(default_factory=dict)
    """Billed usage ids that could not be re-priced, with the reason (no usage record, no
    license held at its time, ...). They are left out of the recomputation."""


def recompute_epoch(
    connection: Connection, *, chain_id: int, distributor: str, epoch: int
) -> Recomputed:
    """Recompute `epoch` from its usage records, the indexed chain state and earlier carries."""
    accruals, events = _t["accruals"], _t["usage_events"]
    query = (
        sa.select(
            accruals.c.usage_id,
            events.c.model_id,
            events.c.license_id,
            events.c.units,
            events.c.event_time,
        )
        .select_from(accruals.outerjoin(events, events.c.usage_id == accruals.c.usage_id))
        .where(accruals.c.settled_epoch == epoch)
    )
    pricer = _Pricer(connection, chain_id)
    records: list[UsageRecord] = []
    unpriced: dict[str, str] = {}
    sums: dict[tuple[int, int, int, str, int, int, int], list[int]] = {}
    billed = 0
    for usage_id, model_id, license_id, units, event_time in connection.execute(query):
        billed += 1
        if model_id is None:
            unpriced[usage_id] = "no usage record"
            continue
        priced = pricer.price(int(model_id), int(license_id), int(event_time))
        if isinstance(priced, str):
            unpriced[usage_id] = priced
            continue
        price, key = priced
        fee = int(units) * price
        records.append(
            UsageRecord(usage_id, int(model_id), int(license_id), int(units), int(event_time), fee)
        )
        total = sums.setdefault(key, [0, 0])
        total[0] += fee
        total[1] += 1
    totals = [
        GroupTotals(model, block, log_index, operator, op, tr, co, fee, count)
        for (model, block, log_index, operator, op, tr, co), (fee, count) in sorted(sums.items())
    ]
    inputs = EpochInputs(
        chain_id=chain_id,
        distributor=distributor,
        epoch=epoch,
        groups=attach_chain_state(connection, chain_id, totals),
        carries_in=load_carries_in(connection, epoch),
        usage_root=usage_root(records),
        usage_count=len(records),
    )
    distribution = compute_distribution(epoch, inputs.groups, inputs.carries_in)
    return Recomputed(inputs, distribution, billed, unpriced)


class _Pricer:
    """Price and state interval of a usage event from the finalized projections, as the join
    decides them (cached per license and time, and per model and time)."""

    def __init__(self, connection: Connection, chain_id: int) -> None:
        self._state = ChainState(connection, chain_id)
        self._view = SqlAlchemyChainView(connection, chain_id)
        self._licenses: dict[tuple[int, int], tuple[int, int] | str] = {}
        self._models: dict[tuple[int, int], tuple[int, int, str, int, int, int] | str] = {}

    def price(
        self, model_id: int, license_id: int, t: int
    ) -> tuple[int, tuple[int, int, int, str, int, int, int]] | str:
        """(price per unit, group key) or why the event cannot be billed."""
        terms = self._license(license_id, t)
        if isinstance(terms, str):
            return terms
        price, license_model = terms
        if license_model != model_id:
            return f"license {license_id} is for model {license_model}"
        state = self._model(model_id, t)
        if isinstance(state, str):
            return state
        block, log_index, operator, op, tr, co = state
        return price, (model_id, block, log_index, operator, op, tr, co)

    def _license(self, license_id: int, t: int) -> tuple[int, int] | str:
        key = (license_id, t)
        if key not in self._licenses:
            found = self._state.license(license_id, AsOf.at_time(t))
            if found is None or found.owner is None:
                self._licenses[key] = f"license {license_id} not held at {t}"
            elif found.expires_at != 0 and t >= found.expires_at:
                self._licenses[key] = f"license {license_id} expired at {found.expires_at}"
            elif found.revoked:
                self._licenses[key] = f"license {license_id} revoked at or before {t}"
            else:
                self._licenses[key] = (int(found.price_per_unit_e6), int(found.model_id))
        return self._licenses[key]

    def _model(self, model_id: int, t: int) -> tuple[int, int, str, int, int, int] | str:
        key = (model_id, t)
        if key not in self._models:
            operator = self._view.model_operator(model_id, t)
            policy = self._view.policy(model_id, t)
            if operator is None:
                self._models[key] = f"model {model_id} not registered at {t}"
            elif policy is None:
                self._models[key] = f"no policy for model {model_id} at {t}"
            else:
                interval = self._view.state_interval(model_id, t)
                self._models[key] = (
                    interval.block_number,
                    interval.log_index,
                    operator.lower(),
                    policy.operator_bps,
                    policy.treasury_bps,
                    policy.contributors_bps,
                )
        return self._models[key]


# --- what was recorded -------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What the database and the chain say about an epoch."""

    epoch_row: Mapping[str, Any]
    allocations: tuple[tuple[int, str, int], ...]
    carries_out: dict[str, int]
    chain_info: EpochInfo | None = None
    """`epochInfo` from the contract; None when not read (epoch not committed)."""
    commit_event: Mapping[str, Any] | None = None
    """The indexed `EpochCommitted` row; None when there is none."""


def read_recorded(connection: Connection, epoch: int) -> Recorded:
    """The epoch row, its allocations and carries, and its indexed commit (if any).

    Raises EpochNotReadyError when the epoch has no row or is not computed yet.
    """
    epochs = _t["epochs"]
    row = connection.execute(sa.select(epochs).where(epochs.c.id == epoch)).one_or_none()
    if row is None:
        raise EpochNotReadyError(f"epoch {epoch} does not exist")
    if row.status not in COMPUTED_STATUSES:
        raise EpochNotReadyError(f"epoch {epoch} is {row.status}: not computed yet")
    allocations = _t["epoch_allocations"]
    leaves = tuple(
        (int(index), str(account), int(amount))
        for index, account, amount in connection.execute(
            sa.select(allocations.c.leaf_index, allocations.c.account, allocations.c.amount)
            .where(allocations.c.epoch_id == epoch)
            .order_by(allocations.c.leaf_index)
        )
    )
    carries = _t["recipient_carries"]
    carries_out = {
        str(account).lower(): int(carry)
        for account, carry in connection.execute(
            sa.select(carries.c.account, carries.c.carry_e6).where(carries.c.epoch_id == epoch)
        )
    }
    return Recorded(dict(row._mapping), leaves, carries_out)


def read_commit_event(
    connection: Connection, chain_id: int, epoch: int
) -> Mapping[str, Any] | None:
    """The indexed `EpochCommitted` row of `epoch` (unfinalized rows too), or None."""
    committed = ChainState(connection, chain_id, finalized_only=False).epoch_committed(
        epoch, AsOf.at_block(2**62)
    )
    return None if committed is None else dict(committed._mapping)


# --- the comparison (pure) ---------------------------------------------------------------------


def build_report(recomputed: Recomputed, recorded: Recorded) -> VerifyReport:
    """Compare a recomputation with the records: database checks, then chain checks."""
    distribution, inputs = recomputed.distribution, recomputed.inputs
    row = recorded.epoch_row
    root = distribution.root
    inputs_hash = inputs.inputs_hash()
    status = str(row["status"])
    priced = recomputed.billed - len(recomputed.unpriced)
    checks = [
        Check(
            "usage records priced",
            f"{recomputed.billed} billed",
            f"{priced} priced"
            + "".join(
                f"; {usage_id}: {why}" for usage_id, why in sorted(recomputed.unpriced.items())[:3]
            ),
            not recomputed.unpriced,
        ),
        Check.equal("db usage_root", _hex(inputs.usage_root), row["usage_root"]),
        Check.equal("db inputs_hash", _hex(inputs_hash), row["inputs_hash"]),
        Check.equal("db root", _hex(root), row["root"]),
        Check.equal("db total", distribution.total, _int(row["total"])),
        Check.equal("db leaf_count", len(distribution.leaves), _int(row["leaf_count"])),
        Check.equal("db accrual_count", distribution.accrual_count, _int(row["accrual_count"])),
        Check.equal("db fees_e6", distribution.fees_e6, _int(row["fees_e6"])),
        Check.equal("db allocations", _hex(root), _hex(_allocations_root(recorded.allocations))),
        _carries_check(distribution.carries_out, recorded.carries_out),
    ]
    notes: list[str] = []
    if EpochStatus(status) in COMMITTED_STATUSES:
        checks += _chain_checks(root, distribution.total, inputs_hash, inputs.usage_root, recorded)
    else:
        notes.append("not committed yet: chain checks skipped")
    return VerifyReport(distribution.epoch, status, tuple(checks), tuple(notes))


def _chain_checks(
    root: bytes, total: int, inputs_hash: bytes, usage_root_: bytes, recorded: Recorded
) -> list[Check]:
    info = recorded.chain_info
    checks = [
        Check.equal("chain root", _hex(root), _hex(info.root) if info else None),
        Check.equal("chain total", total, info.total if info else None),
    ]
    event = recorded.commit_event
    if event is None and root == ZERO_ROOT:
        # Nothing to pay: committed without a transaction, so there is no event to compare.
        return checks
    checks += [
        Check.equal("chain event root", _hex(root), event["merkle_root"] if event else None),
        Check.equal("chain event total", total, _int(event["total"]) if event else None),
        Check.equal(
            "chain inputs_hash", _hex(inputs_hash), event["inputs_hash"] if event else None
        ),
        Check.equal("chain usage_root", _hex(usage_root_), event["usage_root"] if event else None),
    ]
    return checks


def _carries_check(expected: Mapping[str, int], actual: Mapping[str, int]) -> Check:
    want = {account: carry for account, carry in expected.items() if carry}
    got = {account: carry for account, carry in actual.items() if carry}
    differing = sorted(want.keys() ^ got.keys() | {a for a in want if got.get(a) != want[a]})
    detail = f"; differs for {differing[0]}" if differing else ""
    return Check(
        "db carries",
        f"{len(want)} accounts, {sum(want.values())} e6",
        f"{len(got)} accounts, {sum(got.values())} e6{detail}",
        want == got,
    )


def _allocations_root(leaves: Iterable[tuple[int, str, int]]) -> bytes:
    values = list(leaves)
    return MerkleTree.of(values, LEAF_ENCODING).root_bytes if values else ZERO_ROOT


def _hex(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value.lower()


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


# --- the whole verification --------------------------------------------------------------------


def verify_epoch(
    connection: Connection,
    *,
    chain_id: int,
    distributor: str,
    epoch: int,
    read_chain: Callable[[int], EpochInfo] | None = None,
) -> VerifyReport:
    """Recompute `epoch` and compare it with the database and the chain.

    `read_chain(epoch) -> EpochInfo` reads the contract (e.g.
    `RoyaltyDistributor.epoch_info`); it is called only for a committed epoch. Raises
    EpochNotReadyError when the epoch is not computed.
    """
    recorded = read_recorded(connection, epoch)
    recomputed = recompute_epoch(
        connection, chain_id=chain_id, distributor=distributor, epoch=epoch
    )
    if EpochStatus(recorded.epoch_row["status"]) in COMMITTED_STATUSES:
        recorded = Recorded(
            recorded.epoch_row,
            recorded.allocations,
            recorded.carries_out,
            chain_info=read_chain(epoch) if read_chain is not None else None,
            commit_event=read_commit_event(connection, chain_id, epoch),
        )
    return build_report(recomputed, recorded)
