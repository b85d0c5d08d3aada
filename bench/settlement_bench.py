"""Benchmark: one epoch's settlement, 10^6 accruals and 10^5 recipients, on SQLite.

A migrated SQLite database gets, by bulk insert (not timed): the chain projections of a few
models (10^5 stakers spread over them, a stake change per state interval, the treasury, the
default policy) and the finalized watermark, then 10^6 accruals billed by one epoch
(`settled_epoch` set). Timed, as the settler runs them:

1. `load_epoch_inputs` (SQL GROUP BY, stakes and treasury per interval from the projections,
   carries, and the usage root over the 10^6 billed usage records);
2. `inputs_hash`;
3. `compute_distribution` (splits, carries, leaves and the payout Merkle tree);
4. the proof of every leaf.

Baselines in the same run: the reference composition of `settlement.split` (split_policy per
group, then apply_carry) over the same groups; and a naive split of each accrual on its own
(split_policy per accrual, no grouping), timed on a sample of a 10^5-accrual subset and
extrapolated to the subset (a full run would take hours).

    .venv/bin/python bench/settlement_bench.py [--accruals 1000000] [--recipients 100000]

Prints the figures and writes bench/results/settlement.json (target: < 60 s for 1-4).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy.pool import NullPool  # noqa: E402

from indexer.checkpoint import Checkpoint  # noqa: E402
from indexer.store import IndexerStore  # noqa: E402
from schemas import migrate  # noqa: E402
from schemas.chain import FinalizedWatermark  # noqa: E402
from schemas.engine import create_engine  # noqa: E402
from settlement.distribution import compute_distribution  # noqa: E402
from settlement.epoch_inputs import load_epoch_inputs  # noqa: E402
from settlement.merkle import hashing_backend  # noqa: E402
from settlement.split import apply_carry, split_policy  # noqa: E402

RESULTS = REPO / "bench" / "results" / "settlement.json"
TARGET_S = 60.0
CHAIN_ID = 31337
DISTRIBUTOR = "0x" + "d1" * 20
EPOCH = 7
MODELS = 4
INTERVALS = 5  # state intervals per model (one stake change each)
PRICE_E6 = 1_500_000
OPERATOR = "0x" + "0a" * 20
TREASURY = "0x" + "7e" * 20
HASH = "0x" + "00" * 32
PAD = 78  # Uint256 on SQLite: zero-padded decimal digits


def u256(value: int) -> str:
    return str(value).zfill(PAD)


def staker(i: int) -> str:
    return f"0x{(i * 0x9E3779B97F4A7C15 + 0xABCDEF) % (1 << 160):040x}"


def interval_block(model: int, k: int) -> int:
    return 1_000 * (k + 1) + model


def populate(url: str, accruals: int, recipients: int) -> None:
    """Projections, watermark and accruals, by bulk insert through the DB-API."""
    migrate.upgrade(url)
    engine = create_engine(url, poolclass=NullPool)
    rng = random.Random(7)
    with engine.begin() as connection:
        last = interval_block(MODELS, INTERVALS)
        watermark = FinalizedWatermark(
            chain_id=CHAIN_ID, block_number=last, block_hash=HASH, block_timestamp=10**9
        )
        IndexerStore(connection, CHAIN_ID).save_checkpoint(Checkpoint(last, HASH, watermark))
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA synchronous = OFF")  # a throwaway database: no fsync
        cursor.execute("PRAGMA journal_mode = MEMORY")
        cursor.execute(
            "INSERT INTO chain_treasuries (chain_id, block_number, log_index, block_hash, "
            "block_timestamp, treasury) VALUES (?, 1, 0, ?, 1, ?)",
            (CHAIN_ID, HASH, TREASURY),
        )
        cursor.execute(
            "INSERT INTO chain_policies (chain_id, block_number, log_index, block_hash, "
            "block_timestamp, model_id, operator_bps, treasury_bps, "
            "contributors_bps) VALUES (?, 1, 1, ?, 1, ?, 2000, 1000, 7000)",
            (CHAIN_ID, HASH, u256(0)),
        )
        stakes: list[tuple[Any, ...]] = []
        totals = [0] * MODELS
        for i in range(recipients):
            model = i % MODELS
            amount = rng.randint(1, 10**21)
            totals[model] += amount
            stakes.append(
                (
                    CHAIN_ID,
                    10 + model,
                    i // MODELS,
                    HASH,
                    1,
                    u256(model + 1),
                    staker(i),
                    "staked",
                    u256(amount),
                    u256(amount),
                    u256(totals[model]),
                )
            )
        for model in range(MODELS):
            for k in range(INTERVALS):  # a top-up by one staker opens each interval
                i = model + MODELS * k
                amount = 10**18
                totals[model] += amount
                stakes.append(
                    (
                        CHAIN_ID,
                        interval_block(model, k),
                        0,
                        HASH,
                        1,
                        u256(model + 1),
                        staker(i),
                        "staked",
                        u256(amount),
                        u256(amount * (k + 2)),
                        u256(totals[model]),
                    )
                )
        cursor.executemany(
            "INSERT INTO chain_stakes (chain_id, block_number, log_index, block_hash, "
            "block_timestamp, model_id, staker, kind, amount, stake_after,"
            " total_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            stakes,
        )
        rows = []
        for n in range(accruals):
            model, k = n % MODELS, (n // MODELS) % INTERVALS
            units = 1 + n % 97
            rows.append(
                (
                    f"bench:{n}",
                    EPOCH,
                    u256(model + 1),
                    u256(model + 1),
                    "0x" + "ab" * 20,
                    10**9 + n,
                    u256(units),
                    u256(PRICE_E6),
                    u256(units * PRICE_E6),
                    interval_block(model, k),
                    0,
                    OPERATOR,
                    2000,
                    1000,
                    7000,
                    EPOCH,
                )
            )
        cursor.executemany(
            "INSERT INTO accruals (usage_id, epoch, model_id, license_id, payer, event_time, "
            "units, price_per_unit_e6, fee_e6, state_block_number, state_log_index, operator, "
            "operator_bps, treasury_bps, contributors_bps, settled_epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def settle(url: str) -> tuple[dict[str, Any], Any, Any]:
    """The timed settlement of the epoch: phases in seconds, inputs, distribution."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            cpu = time.process_time()
            start = time.perf_counter()
            inputs = load_epoch_inputs(
                connection, chain_id=CHAIN_ID, distributor=DISTRIBUTOR, epoch=EPOCH
            )
            loaded = time.perf_counter()
        inputs_hash = inputs.inputs_hash()
        hashed = time.perf_counter()
        distribution = compute_distribution(EPOCH, inputs.groups, inputs.carries_in)
        computed = time.perf_counter()
        assert distribution.tree is not None
        proofs = distribution.tree.proofs()
        done = time.perf_counter()
        cpu = time.process_time() - cpu
    finally:
        engine.dispose()
    assert len(proofs) == len(distribution.leaves)
    phases = {
        "load_epoch_inputs_s": loaded - start,
        "inputs_hash_s": hashed - loaded,
        "compute_distribution_s": computed - hashed,
        "proofs_s": done - computed,
        "total_s": done - start,
        "total_cpu_s": cpu,
        "root": "0x" + distribution.root.hex(),
        "inputs_hash": "0x" + inputs_hash.hex(),
        "usage_root": "0x" + inputs.usage_root.hex(),
    }
    return phases, inputs, distribution


def reference_grouped(inputs: Any, groups: int) -> dict[str, Any]:
    """settlement.split (split_policy per group, then apply_carry) against
    compute_distribution, both over the first `groups` groups: seconds of each."""
    subset = inputs.groups[:groups]
    start = time.perf_counter()
    ours = compute_distribution(EPOCH, subset, inputs.carries_in)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    units: dict[str, int] = {}
    for g in subset:
        split = split_policy(
            g.fee_e6,
            g.operator_bps,
            g.treasury_bps,
            g.contributors_bps,
            operator=g.operator,
            treasury=g.treasury,
            stakes=g.stakes,
        )
        for account, share in split.allocations().items():
            units[account] = units.get(account, 0) + share
    result = apply_carry(units, inputs.carries_in)
    reference_s = time.perf_counter() - start
    assert {a: v for a, v in result.amounts.items() if v} == ours.amounts(), "they disagree"
    return {
        "groups": len(subset),
        "splits": sum(len(g.stakes) for g in subset),
        "reference_s": reference_s,
        "ours_s": ours_s,
    }


def naive_per_accrual(inputs: Any, subset: int, sample: int) -> dict[str, Any]:
    """split_policy of each accrual on its own, timed on `sample` accruals of the subset."""
    group = inputs.groups[0]
    fee = 50 * PRICE_E6
    start = time.perf_counter()
    for _ in range(sample):
        split_policy(
            fee,
            group.operator_bps,
            group.treasury_bps,
            group.contributors_bps,
            operator=group.operator,
            treasury=group.treasury,
            stakes=group.stakes,
        ).allocations()
    per_accrual = (time.perf_counter() - start) / sample
    return {
        "subset_accruals": subset,
        "sampled_accruals": sample,
        "stakers_per_split": len(group.stakes),
        "per_accrual_s": per_accrual,
        "extrapolated_subset_s": per_accrual * subset,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accruals", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=100_000, help="stakers")
    parser.add_argument("--naive-sample", type=int, default=2)
    parser.add_argument("--reference-groups", type=int, default=2)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/settlement-bench.db"
        start = time.perf_counter()
        populate(url, args.accruals, args.recipients)
        populate_s = time.perf_counter() - start
        phases, inputs, distribution = settle(url)
    reference = reference_grouped(inputs, args.reference_groups)
    naive = naive_per_accrual(inputs, min(args.accruals, 100_000), args.naive_sample)
    load = " ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    report = {
        "what": "one epoch: load_epoch_inputs + inputs_hash + compute_distribution "
        "(splits, carries, payout tree) + every proof, SQLite",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "sqlite": __import__("sqlite3").sqlite_version,
            "keccak": hashing_backend(),
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "load_average_after": load,
        },
        "epoch": {
            "accruals": args.accruals,
            "stakers": args.recipients,
            "models": MODELS,
            "intervals_per_model": INTERVALS,
            "groups": len(inputs.groups),
            "leaves": len(distribution.leaves),
            "total": str(distribution.total),
            "fees_e6": str(distribution.fees_e6),
        },
        "populate_s_untimed": populate_s,
        "ours": phases,
        "target_s": TARGET_S,
        "within_target": phases["total_s"] < TARGET_S,
        "baseline_reference_split_per_group": reference,
        "baseline_naive_per_accrual": naive,
    }
    print(
        f"accruals {args.accruals:,}  stakers {args.recipients:,}  groups {len(inputs.groups)}"
        f"  leaves {len(distribution.leaves):,}  (populate {populate_s:.1f} s, untimed)"
    )
    for name in ("load_epoch_inputs_s", "inputs_hash_s", "compute_distribution_s", "proofs_s"):
        print(f"  {name:<24} {phases[name]:8.2f} s")
    print(f"  {'total':<24} {phases['total_s']:8.2f} s   (target < {TARGET_S:.0f} s)")
    print(f"  {'process CPU':<24} {phases['total_cpu_s']:8.2f} s   (load average {load})")
    print(
        f"baseline: settlement.split over {reference['groups']} groups "
        f"({reference['splits']:,} stakes) {reference['reference_s']:.2f} s, "
        f"compute_distribution {reference['ours_s']:.2f} s (incl. payout tree)"
    )
    print(
        f"baseline: naive split per accrual {naive['per_accrual_s']:.3f} s/accrual → "
        f"~{naive['extrapolated_subset_s']:.0f} s for {naive['subset_accruals']:,} accruals"
    )
    if not args.no_save:
        RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"saved {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
