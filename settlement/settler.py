"""The settler: moves epochs through `open → closing → computed → committed → claimable |
disputed`, one idempotent step at a time.

`Settler.step()` does every move that is due, once:

1. **open**: create an `open` row for every epoch from the first accrual's epoch up to the
   current one (the epoch of the latest of wall-clock time, decided usage and the chain
   watermark);
2. **close** (open → closing): oldest first, while both watermarks (`settlement.watermarks`)
   have passed the epoch's end;
3. **compute** (closing → computed), strictly in order because carries chain, each in ONE
   database transaction: the compare-and-set of the status first (so a second settler blocks,
   then finds nothing to do), then `UPDATE accruals SET settled_epoch = N WHERE settled_epoch
   IS NULL AND epoch <= N`, the epoch's inputs, its distribution, and the leaves, carries, root
   and totals. An accrual committed after that transaction (a late one) keeps `settled_epoch`
   NULL and is billed by the next epoch computed: never lost, never twice;
4. **commit** (computed → committed), in order, through `settlement.committer.Committer`
   (crash-safe: it reads the chain and the recorded transactions before it signs anything).
   An epoch with no leaf (nothing to pay: no accruals, or only sub-unit amounts, which all
   carry) has no Merkle tree, and `commitEpoch` rejects a zero root: it is committed without a
   transaction (root 0x00…00, total 0, `tx_hash` and `block_number` NULL, `claimable_at` the
   time of that step) and is claimable at once; its carries still carry;
5. **dispute window** (committed → claimable | disputed): claimable once the chain's time has
   reached `claimable_at` and the chain still says COMMITTED; disputed as soon as the chain
   says DISPUTED (a guardian's `dispute`; the contract refunded the total to the settler).
   Both are final.

Every move is a compare-and-set in `settlement.store.EpochStore`, so two settlers, or a settler
and its restart, never apply a move twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, Gauge, Histogram
from sqlalchemy.engine import Connection, Engine

from schemas.epoch import EpochStatus
from schemas.tables import metadata
from settlement.committer import AwaitingConfirmations, Committer, chain_verdict
from settlement.errors import InvariantViolation, RetryableError
from settlement.store import (
    DONE_COMPUTING,
    ZERO_HASH,
    ComputedEpoch,
    EpochStore,
    StoredEpoch,
    hex32,
)
from settlement.watermarks import Watermarks, read_watermarks
from stream.epochs import EpochClock

log = structlog.get_logger("royalty.settler")

REGISTRY = CollectorRegistry(auto_describe=True)
EPOCHS = Gauge(
    "royalty_settlement_epochs", "Epochs by lifecycle status.", ["status"], registry=REGISTRY
)
LAST_COMMITTED = Gauge(
    "royalty_settlement_last_committed_epoch",
    "Greatest epoch committed (or beyond); -1 before the first.",
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "royalty_settlement_commit_seconds",
    "Seconds to put one epoch on chain (approve, commit, receipts).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)

_accruals = metadata.tables["accruals"]

#: Epoch rows one step creates at most (the next steps create the rest): a bound on the work
#: of a step after a long pause, or with a genesis far in the past.
MAX_NEW_EPOCHS_PER_STEP = 1000


class LeafLike(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def account(self) -> str: ...
    @property
    def amount(self) -> int: ...


class DistributionLike(Protocol):
    """What the settler reads of `settlement.distribution.EpochDistribution`."""

    @property
    def fees_e6(self) -> int: ...
    @property
    def accrual_count(self) -> int: ...
    @property
    def carries_out(self) -> Mapping[str, int]: ...
    @property
    def leaves(self) -> Sequence[LeafLike]: ...
    @property
    def total(self) -> int: ...
    @property
    def root(self) -> bytes: ...


class InputsLike(Protocol):
    """What the settler reads of `settlement.epoch_inputs.EpochInputs`."""

    @property
    def groups(self) -> Sequence[Any]: ...
    @property
    def carries_in(self) -> Mapping[str, int]: ...
    @property
    def usage_root(self) -> bytes: ...
    def inputs_hash(self) -> bytes: ...


class LoadInputs(Protocol):
    def __call__(
        self, connection: Connection, *, chain_id: int, distributor: str, epoch: int
    ) -> InputsLike: ...


Compute = Callable[[int, Iterable[Any], Mapping[str, int]], DistributionLike]


def _default_load_inputs() -> LoadInputs:
    from settlement.epoch_inputs import load_epoch_inputs

    loader: LoadInputs = load_epoch_inputs
    return loader


def _default_compute() -> Compute:
    from settlement.distribution import compute_distribution

    compute: Compute = compute_distribution
    return compute


@dataclass(frozen=True)
class SettlerConfig:
    """What the settler needs to know besides its database and chain."""

    chain_id: int
    distributor: str
    clock: EpochClock
    allowed_lateness_s: int
    wall_clock_watermark: bool = False
    """Let the usage watermark follow wall-clock time (minus the lateness) through idle periods."""


@dataclass
class StepReport:
    """What one step did (epoch ids per move)."""

    created: int = 0
    closed: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)
    claimable: list[int] = field(default_factory=list)
    disputed: list[int] = field(default_factory=list)
    watermarks: Watermarks | None = None
    retry: str | None = None
    """Why the step stopped early on a transient failure (retried next step)."""

    @property
    def moved(self) -> bool:
        """Whether the step changed anything."""
        return bool(
            self.created
            or self.closed
            or self.computed
            or self.committed
            or self.claimable
            or self.disputed
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Settler:
    """The epoch state machine over one database and (optionally) one chain.

    Without a `committer` the settler closes and computes epochs but commits nothing.
    `load_inputs` and `compute` default to `settlement.epoch_inputs.load_epoch_inputs` and
    `settlement.distribution.compute_distribution`. `now` gives wall-clock unix seconds.
    """

    def __init__(
        self,
        engine: Engine,
        config: SettlerConfig,
        committer: Committer | None = None,
        *,
        load_inputs: LoadInputs | None = None,
        compute: Compute | None = None,
        now: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self.engine = engine
        self.config = config
        self.committer = committer
        self.load_inputs = load_inputs or _default_load_inputs()
        self.compute = compute or _default_compute()
        self.now = now

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop_event: threading.Event, interval_s: float) -> None:
        """Step every `interval_s` seconds until `stop_event` is set.

        Transient failures (chain or database unavailable, slow receipts) are logged and
        retried at the next step; anything else (a root conflict above all) stops the loop.
        """
        log.info("settler starting", chain_id=self.config.chain_id, interval_s=interval_s)
        while not stop_event.is_set():
            try:
                self.step()
            except (RetryableError, sa.exc.OperationalError) as exc:
                log.warning("settler step failed, retrying", error=str(exc))
            stop_event.wait(interval_s)
        log.info("settler stopped")

    def step(self) -> StepReport:
        """Do every due move once; idempotent."""
        report = StepReport()
        with self.engine.begin() as connection:
            now = self.now()
            marks = read_watermarks(
                connection,
                self.config.chain_id,
                allowed_lateness_s=self.config.allowed_lateness_s,
                now=now if self.config.wall_clock_watermark else None,
            )
            report.watermarks = marks
            report.created = self._open_epochs(connection, marks, now)
            report.closed = self._close(connection, marks)
        report.computed = self._compute_due()
        try:
            self._commit_due(report)
            self._settle_windows(report)
        except AwaitingConfirmations as exc:
            report.retry = str(exc)
            log.info("waiting for the commit's confirmations", detail=str(exc))
        except RetryableError as exc:
            report.retry = str(exc)
            log.warning("settler step stopped early, retrying next step", error=str(exc))
        self._update_metrics()
        if report.moved:
            log.info(
                "settler step",
                created=report.created,
                closed=report.closed,
                computed=report.computed,
                committed=report.committed,
                claimable=report.claimable,
                disputed=report.disputed,
                chain_watermark=marks.chain,
                usage_watermark=marks.usage,
            )
        return report

    # -- open and close -----------------------------------------------------------------------

    def _open_epochs(self, connection: Connection, marks: Watermarks, now: int) -> int:
        store = EpochStore(connection)
        first = store.first_epoch_id()
        if first is None:
            value = connection.execute(sa.select(sa.func.min(_accruals.c.epoch))).scalar()
            if value is None:
                return 0
            first = int(value)
        clock = self.config.clock
        latest = max(t for t in (now, marks.decided_max, marks.chain) if t is not None)
        current = clock.epoch_of(latest)
        last = store.last_epoch_id()
        start = first if last is None else last + 1
        stop = min(current, start + MAX_NEW_EPOCHS_PER_STEP - 1)
        windows = [(n, clock.start_of(n), clock.end_of(n)) for n in range(start, stop + 1)]
        created = store.ensure_open(windows)
        if created:
            log.info("epochs opened", first=start, last=stop, current=current, created=created)
        return created

    def _close(self, connection: Connection, marks: Watermarks) -> list[int]:
        store = EpochStore(connection)
        closed = []
        for epoch in store.with_status(EpochStatus.OPEN):
            if not marks.passed(epoch.end_time):
                break
            if store.transition(epoch.id, EpochStatus.OPEN, EpochStatus.CLOSING):
                log.info(
                    "epoch closing",
                    epoch=epoch.id,
                    end_time=epoch.end_time,
                    chain_watermark=marks.chain,
                    usage_watermark=marks.usage,
                )
                closed.append(epoch.id)
        return closed

    # -- compute ------------------------------------------------------------------------------

    def _compute_due(self) -> list[int]:
        with self.engine.connect() as connection:
            store = EpochStore(connection)
            closing = store.with_status(EpochStatus.CLOSING)
            first = store.first_epoch_id()
        computed = []
        for epoch in closing:
            if epoch.id != first and not self._predecessor_done(epoch.id):
                break
            if self.compute_epoch(epoch.id):
                computed.append(epoch.id)
        return computed

    def _predecessor_done(self, epoch: int) -> bool:
        with self.engine.connect() as connection:
            previous = EpochStore(connection).get(epoch - 1)
        return previous is not None and previous.status in DONE_COMPUTING

    def compute_epoch(self, epoch: int) -> bool:
        """Compute a closing epoch in one transaction; False if it was not closing any more."""
        started = time.monotonic()
        with self.engine.begin() as connection:
            store = EpochStore(connection)
            # The status first: on PostgreSQL this locks the row, so a second settler waits
            # here and then finds the epoch computed; on SQLite it takes the write lock.
            if not store.transition(epoch, EpochStatus.CLOSING, EpochStatus.COMPUTED):
                return False
            billed = store.mark_settled(epoch)
            inputs = self.load_inputs(
                connection,
                chain_id=self.config.chain_id,
                distributor=self.config.distributor,
                epoch=epoch,
            )
            distribution = self.compute(epoch, inputs.groups, inputs.carries_in)
            computed = _computed(distribution, inputs)
            if computed.accrual_count != billed:
                raise InvariantViolation(
                    f"epoch {epoch}: {billed} accruals billed, {computed.accrual_count} distributed"
                )
            store.write_computed(epoch, computed, _utcnow())
        log.info(
            "epoch computed",
            epoch=epoch,
            accruals=computed.accrual_count,
            fees_e6=computed.fees_e6,
            leaves=len(computed.leaves),
            total=computed.total,
            root=computed.root,
            seconds=round(time.monotonic() - started, 3),
        )
        return True

    # -- commit and dispute window ------------------------------------------------------------

    def _commit_due(self, report: StepReport) -> None:
        with self.engine.connect() as connection:
            due = EpochStore(connection).with_status(EpochStatus.COMPUTED)
        for epoch in due:
            if not epoch.on_chain:
                self._commit_off_chain(epoch, report)
                continue
            if self.committer is None:
                log.warning("no settler key: computed epoch left uncommitted", epoch=epoch.id)
                return
            started = time.monotonic()
            record = self.committer.commit(epoch)
            with self.engine.begin() as connection:
                moved = EpochStore(connection).transition(
                    epoch.id,
                    EpochStatus.COMPUTED,
                    EpochStatus.COMMITTED,
                    tx_hash=record.tx_hash,
                    block_number=record.block_number,
                    claimable_at=record.claimable_at,
                    committed_at=_utcnow(),
                )
            if moved:
                COMMIT_SECONDS.observe(time.monotonic() - started)
                report.committed.append(epoch.id)
                log.info(
                    "epoch committed",
                    epoch=epoch.id,
                    root=epoch.root,
                    total=epoch.total,
                    tx=record.tx_hash,
                    block=record.block_number,
                    claimable_at=record.claimable_at,
                    gas_used=record.gas_used,
                )

    def _commit_off_chain(self, epoch: StoredEpoch, report: StepReport) -> None:
        with self.engine.begin() as connection:
            moved = EpochStore(connection).transition(
                epoch.id,
                EpochStatus.COMPUTED,
                EpochStatus.COMMITTED,
                claimable_at=self.now(),
                committed_at=_utcnow(),
            )
        if moved:
            report.committed.append(epoch.id)
            log.info(
                "epoch committed without a transaction: it has no leaf to pay",
                epoch=epoch.id,
                accruals=epoch.accrual_count,
                fees_e6=epoch.fees_e6,
            )

    def _settle_windows(self, report: StepReport) -> None:
        with self.engine.connect() as connection:
            committed = EpochStore(connection).with_status(EpochStatus.COMMITTED)
        chain_time: int | None = None
        for epoch in committed:
            if not epoch.on_chain:
                verdict: str | None = "claimable"
            elif self.committer is None:
                return
            else:
                if chain_time is None:
                    chain_time = self.committer.chain_time()
                verdict = chain_verdict(self.committer.epoch_info(epoch.id), chain_time)
            if verdict is None:
                continue
            target = EpochStatus(verdict)
            with self.engine.begin() as connection:
                moved = EpochStore(connection).transition(epoch.id, EpochStatus.COMMITTED, target)
            if not moved:
                continue
            if target is EpochStatus.DISPUTED:
                report.disputed.append(epoch.id)
                log.error(
                    "EPOCH DISPUTED on chain: its allocations will not be paid",
                    epoch=epoch.id,
                    root=epoch.root,
                    total=epoch.total,
                )
            else:
                report.claimable.append(epoch.id)
                log.info("epoch claimable", epoch=epoch.id, claimable_at=epoch.claimable_at)

    def _update_metrics(self) -> None:
        with self.engine.connect() as connection:
            store = EpochStore(connection)
            counts = store.status_counts()
            last = store.last_committed_epoch()
        for status, count in counts.items():
            EPOCHS.labels(status=status.value).set(count)
        LAST_COMMITTED.set(-1 if last is None else last)


def _computed(distribution: DistributionLike, inputs: InputsLike) -> ComputedEpoch:
    """The rows of a distribution, checked for conservation of its leaves."""
    leaves = [(leaf.index, leaf.account, leaf.amount) for leaf in distribution.leaves]
    if sum(amount for _, _, amount in leaves) != distribution.total:
        raise InvariantViolation("leaf amounts do not sum to the epoch total")
    return ComputedEpoch(
        leaves=leaves,
        carries_out=dict(distribution.carries_out),
        root=hex32(distribution.root) if leaves else ZERO_HASH,
        total=distribution.total,
        inputs_hash=hex32(inputs.inputs_hash()),
        usage_root=hex32(inputs.usage_root),
        accrual_count=distribution.accrual_count,
        fees_e6=distribution.fees_e6,
    )
