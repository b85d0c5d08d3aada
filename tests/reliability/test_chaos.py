"""The reliability scenario: the whole pipeline on the real services, faults injected at random.

Traffic flows through the metering gateway into Kafka, the faust stream workers join it with the
indexed chain into PostgreSQL, the settler closes and commits epochs on anvil. Meanwhile the
scenario SIGKILLs and restarts, at random, the gateway, the Kafka broker, a faust worker, the
indexer and the settler, and reorganises the chain below the confirmation depth (each kind of
fault at least once). Then it lets the pipeline drain and checks the DESIGN.md invariants end
to end:

1. every inference the client saw succeed is billed exactly once, and nothing is billed that
   the metering node did not sign;
2. conservation per epoch: fees billed = leaf amounts x 10^6 + carries (out - in), the leaf
   total is what the chain holds for the epoch, committed once;
3. every committed epoch verifies from public inputs (`royalty verify`);
4. claims: once the dispute window has passed, every leaf of every committed epoch is claimed
   with its proof; each account receives exactly its leaves, the distributor pays out exactly
   the committed totals, and a second claim of any leaf reverts.

A short report (faults injected, events, invariants checked) is printed.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from api.proofs import build_tree
from deploy.local import Anvil, KafkaBroker, TritonServer
from indexer.asof import ChainState
from schemas import migrate
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System, demo_token
from settlement.chain.distributor import Claim
from settlement.chain.errors import ContractRevertError
from settlement.verify import verify_epoch
from tests.contracts.contract_helpers import (
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)
from tests.reliability.pipeline import (
    CONFIRMATIONS,
    ChainClock,
    Service,
    Traffic,
    base_env,
    gateway_service,
    indexer_service,
    register_world,
    settler_service,
    worker_service,
    write_metering_files,
)

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.anvil, pytest.mark.triton]

EPOCH_S = 15
CHAOS_S = 45
_t = metadata.tables


def _scalar(url: str, query: sa.Select[tuple[int]]) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(query).scalar_one() or 0)
    finally:
        engine.dispose()


def _billed_ids(url: str) -> list[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [str(r[0]) for r in connection.execute(sa.select(_t["accruals"].c.usage_id))]
    finally:
        engine.dispose()


def _settled_and_verified(url: str, system: System, deadline: float) -> list[int]:
    """Wait for every epoch holding usage to be committed, then check settlement end to end."""
    engine = create_engine(url, poolclass=NullPool)
    accruals, epochs = _t["accruals"], _t["epochs"]
    try:
        while True:
            with engine.connect() as c:
                # The newest epoch any accrual belongs to or was billed in (a late accrual is
                # billed in a later epoch than its own): all of them must be committed.
                last = c.execute(
                    sa.select(
                        sa.func.max(sa.func.coalesce(accruals.c.settled_epoch, accruals.c.epoch))
                    )
                ).scalar_one()
                statuses = {
                    int(i): str(st)
                    for i, st in c.execute(
                        sa.select(epochs.c.id, epochs.c.status).where(epochs.c.id <= last)
                    )
                }
                unsettled = c.execute(
                    sa.select(sa.func.count())
                    .select_from(accruals)
                    .where(accruals.c.settled_epoch.is_(None))
                ).scalar_one()
            done = all(s in ("committed", "claimable") for s in statuses.values())
            if statuses and done and unsettled == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"epochs not settled: {statuses}, unsettled {unsettled}")
            time.sleep(1.0)
        # The indexer must have finalized the commits too: verify reads their events.
        with engine.connect() as c:
            newest = c.execute(sa.select(sa.func.max(epochs.c.block_number))).scalar_one()
        while newest is not None:
            with engine.connect() as c:
                mark = ChainState(c, system.manifest.chain_id).watermark()
            if mark is not None and mark.block_number >= newest:
                break
            if time.monotonic() > deadline:
                raise AssertionError("the indexer did not finalize the commits")
            time.sleep(0.5)
        distributor = system.royalty_distributor
        committed = distributor.contract.events.EpochCommitted().get_logs(from_block=0)
        commits = Counter(int(log["args"]["epoch"]) for log in committed)
        checked = []
        carries: dict[str, int] = {}
        with engine.connect() as c:
            assert (
                c.execute(
                    sa.select(sa.func.count())
                    .select_from(accruals)
                    .where(accruals.c.settled_epoch < accruals.c.epoch)
                ).scalar_one()
                == 0
            ), "an accrual billed before its own epoch"
            for row in c.execute(sa.select(epochs).order_by(epochs.c.id)):
                if row.root is None:
                    break
                fees = sum(
                    int(f)
                    for (f,) in c.execute(
                        sa.select(accruals.c.fee_e6).where(accruals.c.settled_epoch == row.id)
                    )
                )
                out = {
                    str(a): int(v)
                    for a, v in c.execute(
                        sa.select(
                            _t["recipient_carries"].c.account, _t["recipient_carries"].c.carry_e6
                        ).where(_t["recipient_carries"].c.epoch_id == row.id)
                    )
                }
                assert fees == int(row.fees_e6)
                assert fees + sum(carries.values()) == 10**6 * int(row.total) + sum(out.values())
                carries = {**carries, **out}
                if row.tx_hash is None:
                    assert int(row.total) == 0
                    continue
                assert commits[int(row.id)] == 1, f"epoch {row.id} committed {commits[row.id]}x"
                info = distributor.epoch_info(int(row.id))
                assert "0x" + info.root.hex() == row.root
                assert info.total == int(row.total)
                report = verify_epoch(
                    c,
                    chain_id=system.manifest.chain_id,
                    distributor=distributor.address,
                    epoch=int(row.id),
                    read_chain=distributor.epoch_info,
                )
                assert report.ok, report.failures
                checked.append(int(row.id))
        return checked
    finally:
        engine.dispose()


def _claim_everything(url: str, system: System, harness: ChainHarness) -> tuple[int, int]:
    """Past the dispute window, claim every leaf of every committed epoch (sent by the
    deployer: tokens go to the leaf's account); check what moved. (leaves, tokens) claimed."""
    distributor = system.royalty_distributor
    token = demo_token(harness.client, system.manifest)
    harness.advance_time(distributor.dispute_window_s() + 1)
    engine = create_engine(url, poolclass=NullPool)
    epochs = _t["epochs"]
    claims: list[Claim] = []
    committed_total = 0
    try:
        with engine.connect() as c:
            rows = c.execute(
                sa.select(epochs.c.id, epochs.c.root, epochs.c.total).where(
                    epochs.c.tx_hash.is_not(None)
                )
            ).all()
            for row in rows:
                tree = build_tree(c, int(row.id), str(row.root))
                committed_total += int(row.total)
                assert sum(amount for _, _, amount in tree.leaves) == int(row.total)
                claims += [
                    Claim(
                        int(row.id),
                        index,
                        account,
                        amount,
                        tuple(bytes.fromhex(p[2:]) for p in tree.proofs[i]),
                    )
                    for i, (index, account, amount) in enumerate(tree.leaves)
                ]
    finally:
        engine.dispose()
    assert claims, "no leaf to claim"
    expected: Counter[str] = Counter()
    for claim in claims:
        expected[claim.account] += claim.amount
    before = {account: token.balance_of(account) for account in expected}
    held = token.balance_of(distributor.address)
    sender = harness.actors.deployer
    for epoch in sorted({claim.epoch for claim in claims}):
        batch = sorted((cl for cl in claims if cl.epoch == epoch), key=lambda cl: cl.account)
        receipt = distributor.claim_many(sender, batch)
        assert receipt["status"] == 1
    for account, amount in expected.items():
        assert token.balance_of(account) - before[account] == amount, account
    assert held - token.balance_of(distributor.address) == committed_total
    assert all(distributor.is_claimed(cl.epoch, cl.index) for cl in claims)
    with pytest.raises(ContractRevertError) as again:
        distributor.claim(sender, claims[0])
    assert again.value.error_name == "AlreadyClaimed"
    return len(claims), committed_total


def test_chaos_every_success_billed_once(
    tmp_path: Path, pg_url: str, triton_server: TritonServer
) -> None:
    rng = random.Random(int(time.time()))
    migrate.upgrade(pg_url)
    anvil = Anvil(tmp_path / "anvil", genesis_timestamp=int(time.time()) - 900).start()
    broker = KafkaBroker(tmp_path / "kafka").start()
    services: list[Service] = []
    clock: ChainClock | None = None
    traffic: Traffic | None = None
    faults: Counter[str] = Counter()
    try:
        actors = dev_actors()
        client = connect_fast(anvil.rpc_url)
        system = deploy_test_system(client, actors)
        harness = ChainHarness(anvil, client, actors)
        licenses = register_world(system, harness)
        manifest = tmp_path / "deployment.json"
        system.manifest.write(manifest)
        keys, ring = write_metering_files(tmp_path, licenses)
        env = base_env(tmp_path, pg_url, anvil.rpc_url, manifest, broker)
        clock = ChainClock(anvil).start()
        clock.tick()
        genesis = int(time.time()) // EPOCH_S * EPOCH_S

        gateway, url = gateway_service(tmp_path, env, triton_server.http_url)
        indexer = indexer_service(tmp_path, env)
        workers = [
            worker_service(tmp_path, env, i, ring, system.manifest.chain_id, EPOCH_S, genesis)
            for i in range(2)
        ]
        settler = settler_service(
            tmp_path, env, "0x" + bytes(actors.settler.key).hex(), EPOCH_S, genesis
        )
        services += [gateway, indexer, *workers, settler]
        for service in services:
            service.start()
        traffic = Traffic(lambda: url, keys).start()

        # --- chaos --------------------------------------------------------------------------
        kinds = ["gateway", "broker", "worker", "indexer", "settler", "reorg"]
        pending = rng.sample(kinds, len(kinds))  # each kind at least once, in random order
        deadline = time.monotonic() + CHAOS_S
        while time.monotonic() < deadline or pending:
            time.sleep(rng.uniform(2.0, 5.0))
            fault = pending.pop() if pending else rng.choice(kinds)
            faults[fault] += 1
            print(f"[chaos] t+{CHAOS_S - (deadline - time.monotonic()):.0f}s {fault}", flush=True)
            if fault == "gateway":
                gateway.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                gateway.start()
            elif fault == "broker":
                broker.kill()
                time.sleep(rng.uniform(0.5, 2.0))
                broker.start()
            elif fault == "worker":
                victim = rng.choice(workers)
                victim.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                victim.start()
            elif fault == "indexer":
                indexer.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                indexer.start()
            elif fault == "settler":
                settler.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                settler.start()
            else:
                clock.reorg(rng.randint(1, CONFIRMATIONS - 1))
        traffic.stop()
        succeeded = set(traffic.succeeded)
        assert len(succeeded) > 50, traffic.outcomes

        # --- drain --------------------------------------------------------------------------
        for service in services:
            if not service.alive():
                service.start()
        drain_deadline = time.monotonic() + 120
        billed: list[str] = []
        while time.monotonic() < drain_deadline:
            billed = _billed_ids(pg_url)
            if succeeded <= set(billed):
                break
            time.sleep(1.0)

        # --- invariants ---------------------------------------------------------------------
        missing = succeeded - set(billed)
        assert not missing, f"{len(missing)} successful inferences never billed ({dict(faults)})"
        assert len(billed) == len(set(billed)), "a usage id billed twice"
        unsigned = _scalar(
            pg_url,
            sa.select(sa.func.count())
            .select_from(_t["accruals"])
            .where(_t["accruals"].c.usage_id.notin_(sa.select(_t["usage_events"].c.usage_id))),
        )
        assert unsigned == 0
        epochs_checked = _settled_and_verified(pg_url, system, drain_deadline + 120)
        for service in services:
            service.stop()
        clock.stop()
        leaves, claimed = _claim_everything(pg_url, system, harness)
        extra = len(set(billed) - succeeded)
        letters = _scalar(pg_url, sa.select(sa.func.count()).select_from(_t["dead_letters"]))
        print(
            "\nchaos report\n"
            f"  faults injected: {dict(faults)}\n"
            f"  service starts: { {s.name: s.starts for s in services} }\n"
            f"  client outcomes: {dict(traffic.outcomes)}\n"
            f"  successful inferences: {len(succeeded)}, billed: {len(billed)} "
            f"(of which {extra} whose response the client never got), dead letters: {letters}\n"
            f"  epochs committed and verified: {epochs_checked}\n"
            f"  leaves claimed: {leaves}, tokens claimed: {claimed} (= committed totals)\n"
            "  invariants: every success billed once; no unsigned billing; every accrual settled "
            "in one epoch; fees = payouts + carries per epoch; one commit per epoch on-chain, "
            "equal to the database; every epoch verified from public inputs; every leaf claimed "
            "once, claims = committed totals"
        )
    finally:
        if traffic is not None:
            traffic.stop()
        for service in services:
            service.stop()
        if clock is not None:
            clock.stop()
        broker.stop()
        anvil.stop()
