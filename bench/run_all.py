"""Run every benchmark and roll their figures up into one JSON and one Markdown table.

    .venv/bin/python bench/run_all.py              # every benchmark at its full size
    .venv/bin/python bench/run_all.py --quick      # smaller sizes (minutes, not an hour)
    .venv/bin/python bench/run_all.py --no-run     # only roll up bench/results/*.json

Each benchmark writes its own `bench/results/<name>.json` with a baseline measured in the same
run; this script runs them one after the other (never in parallel: they would measure each
other), then extracts the headline figures, each with its baseline, the ratio and the target,
into `bench/results/summary.json` and `bench/results/summary.md`, and refreshes the table in
README.md between the `bench:start` / `bench:end` markers. A benchmark that fails is reported
as failed in the table and makes the exit status 1; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Figure:
    """One headline figure of a benchmark, against its same-run baseline and its target."""

    bench: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline, when both are known."""
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


Extractor = Callable[[dict[str, Any]], list[Figure]]


def _merkle(doc: dict[str, Any]) -> list[Figure]:
    out = []
    for r in doc["results"]:
        py, oz = r["python"]["total_s"], (r.get("oz") or {}).get("total_s")
        speedup = None if oz is None else oz / py
        big = r["n"] >= 1_000_000
        met = (py < 10 and (speedup or 0) >= 3) if big else None
        out.append(
            Figure(
                "merkle",
                f"tree + all proofs, {r['n']:,} leaves",
                py,
                "s",
                oz,
                "@openzeppelin/merkle-tree",
                "< 10 s and >= 3x faster at 10^6" if big else "",
                met,
            )
        )
    return out


def _gas(doc: dict[str, Any]) -> list[Figure]:
    t = doc["targets"]
    single = doc["single_claim"][-1]
    return [
        Figure(
            "gas",
            f"claim gas, {single['leaves']:,} leaves",
            single["royalty_avg_gas"],
            "gas",
            single["baseline_avg_gas"],
            "single-root Merkle distributor",
            "overhead bounded",
            t.get("single_claim_ok"),
        ),
        Figure(
            "gas",
            "claimMany(10) vs 4 single claims",
            t.get("claim_many_10_vs_4_singles"),
            "x",
            target="< 1",
            met=t.get("claim_many_ok"),
        ),
    ]


def _indexer(doc: dict[str, Any]) -> list[Figure]:
    index, raw = doc["index"], doc["raw_fetch"]
    t = doc["targets"]
    return [
        Figure(
            "indexer",
            f"backfill into PostgreSQL, {index['events']:,} events",
            index["events_per_s"],
            "events/s",
            raw["logs_per_s"],
            "raw eth_getLogs",
            ">= 5,000/s and within 2x of raw",
            bool(t.get("events_per_s_met")) and bool(t.get("within_2x_of_raw")),
        )
    ]


def _metering(doc: dict[str, Any]) -> list[Figure]:
    out = []
    t = doc["targets"]
    inference = doc["inference"]
    for path, runs in inference.items():
        if path.startswith("direct"):
            continue
        direct = inference.get("direct_grpc" if path.endswith("_grpc") else "direct", {})
        # The pass-through proxy is the floor of one hop (no metering): a reference, not held
        # to the gateway's targets.
        floor = path == "passthrough"
        for concurrency, run in runs.items():
            base = direct.get(concurrency)
            ratio = None if base is None else run["rps"] / base["rps"]
            out.append(
                Figure(
                    "metering",
                    f"inference through {path}, concurrency {concurrency}",
                    run["rps"],
                    "req/s",
                    None if base is None else base["rps"],
                    "direct to Triton" + (" (gRPC)" if path.endswith("_grpc") else ""),
                    "reference: one hop, no metering"
                    if floor
                    else f">= {t['throughput_ratio_min']}x direct",
                    None if ratio is None or floor else ratio >= t["throughput_ratio_min"],
                )
            )
            if base is not None and concurrency == "1":
                added = run["p50_ms"] - base["p50_ms"]
                out.append(
                    Figure(
                        "metering",
                        f"latency added by {path}, concurrency 1 (p50)",
                        added,
                        "ms",
                        base["p50_ms"],
                        "direct p50 (ms)",
                        "reference" if floor else f"<= {t['added_p50_ms_max']} ms",
                        None if floor else added <= t["added_p50_ms_max"],
                    )
                )
            durable = run.get("durable_ms_mean")
            if durable is not None and concurrency == "1":
                out.append(
                    Figure(
                        "metering",
                        f"usage event made durable by {path}, concurrency 1 (mean)",
                        durable,
                        "ms",
                        target="reference: part of the added latency",
                    )
                )
    producer = doc.get("producer") or {}
    for key, how in (
        ("durable_kafka_publish_per_s", "one call per event from the event loop, as the gateway"),
        ("durable_kafka_per_s", "one call per event from a thread (`submit`)"),
        ("durable_kafka_batched_per_s", "batches of 1,000, as the HTTP ingest"),
    ):
        rate = producer.get(key)
        if rate is None:
            continue
        out.append(
            Figure(
                "metering",
                f"durable usage producer into Kafka, {how}",
                rate,
                "events/s",
                producer.get("raw_kafka_python_per_s"),
                "raw kafka-python producer",
                f">= {t['producer_per_s_min']:,}/s",
                rate >= t["producer_per_s_min"],
            )
        )
    return out


def _settlement(doc: dict[str, Any]) -> list[Figure]:
    if "figures" in doc:
        return _generic("settlement")(doc)
    ours, epoch = doc["ours"], doc["epoch"]
    reference = doc.get("baseline_reference_split_per_group") or {}
    out = [
        Figure(
            "settlement",
            f"epoch of {epoch['accruals']:,} accruals, {epoch['stakers']:,} recipients",
            ours["total_s"],
            "s",
            target=f"< {doc['target_s']:.0f} s",
            met=ours["total_s"] < doc["target_s"],
        )
    ]
    if reference:
        out.append(
            Figure(
                "settlement",
                f"split of {reference['splits']:,} stakes",
                reference["ours_s"],
                "s",
                reference["reference_s"],
                "reference split per group",
            )
        )
    return out


def _api(doc: dict[str, Any]) -> list[Figure]:
    if "figures" in doc:
        return _generic("api")(doc)
    runs = {r["run"]: r for r in doc["results"]}
    targets = doc["targets"]
    cached, baseline = runs.get("cached"), runs.get("baseline")
    if cached is None:
        return []
    return [
        Figure(
            "api",
            "proof lookups/s (concurrent clients)",
            cached["requests_per_s"],
            "req/s",
            None if baseline is None else baseline["requests_per_s"],
            "no tree cache",
            f">= {targets['requests_per_s']:,}/s",
            cached["requests_per_s"] >= targets["requests_per_s"],
        ),
        Figure(
            "api",
            "proof lookup p99",
            cached["p99_ms"],
            "ms",
            target=f"< {targets['p99_ms']} ms",
            met=cached["p99_ms"] < targets["p99_ms"],
        ),
    ]


def _generic(name: str) -> Extractor:
    """Benchmarks that list their figures themselves under `figures`."""

    def extract(doc: dict[str, Any]) -> list[Figure]:
        return [
            Figure(
                name,
                f["figure"],
                f.get("value"),
                f.get("unit", ""),
                f.get("baseline"),
                f.get("baseline_name", ""),
                f.get("target", ""),
                f.get("met"),
            )
            for f in doc.get("figures", [])
        ]

    return extract


_STREAM_HMAC = (
    "--algorithm",
    "hmac-sha256",
    "--engines",
    "kafka-python,faust",
    "--output",
    "bench/results/stream-hmac.json",
)
"""The stream workers again with HMAC-signed usage events (no Ed25519 verification)."""


@dataclass(frozen=True)
class Bench:
    """A benchmark script, its arguments (full and quick) and how to read its results."""

    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    extract: Extractor


BENCHES = (
    Bench("merkle", "merkle_bench.py", (), ("--sizes", "10000", "100000"), _merkle),
    Bench("gas", "gas_bench.py", (), ("--max-exp", "10", "--claim-many-exps", "10"), _gas),
    Bench("indexer", "indexer_bench.py", (), ("--events", "20000", "--runs", "1"), _indexer),
    Bench("metering", "metering_bench.py", (), ("--requests", "500", "--rounds", "1"), _metering),
    Bench(
        "kafka-roundtrip",
        "kafka_roundtrip_bench.py",
        (),
        ("--trips", "500", "--rounds", "1"),
        _generic("kafka-roundtrip"),
    ),
    Bench(
        "worker-outputs",
        "worker_outputs_bench.py",
        (),
        ("--records", "20000", "--rounds", "1"),
        _generic("worker-outputs"),
    ),
    Bench(
        "settlement",
        "settlement_bench.py",
        (),
        ("--accruals", "100000", "--recipients", "10000"),
        _settlement,
    ),
    Bench("api", "api_bench.py", (), ("--recipients", "2000", "--seconds", "5"), _api),
    Bench("stream", "stream_bench.py", (), ("--events", "20000"), _generic("stream")),
    Bench(
        "stream-hmac",
        "stream_bench.py",
        _STREAM_HMAC,
        (*_STREAM_HMAC, "--events", "20000"),
        _generic("stream-hmac"),
    ),
)


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def run(bench: Bench, quick: bool, log_dir: Path) -> tuple[bool, float, str]:
    """Run one benchmark; (succeeded, seconds, log path)."""
    script = ROOT / "bench" / bench.script
    log = log_dir / f"{bench.name}.log"
    if not script.exists():
        log.write_text(f"{script} does not exist\n")
        return False, 0.0, str(log)
    args = [sys.executable, str(script), *(bench.quick if quick else bench.full)]
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    return done.returncode == 0, time.monotonic() - started, str(log)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def markdown(figures: list[Figure], failed: list[str], meta: dict[str, Any]) -> str:
    """The roll-up table."""
    m = meta["machine"]
    where = f"{m['cpu']}, {m['cores']} cores, Python {m['python']}"
    if meta.get("rolled_up_only"):
        # Nothing ran now: each figure is its benchmark's last saved run on this machine.
        head = (
            f"Rolled up {meta['generated_at'][:10]} from each benchmark's last saved run "
            f"(`bench/results/<name>.json`) on {where}."
        )
    else:
        sizes = "quick sizes" if meta["quick"] else "full sizes"
        head = f"Measured {meta['generated_at'][:10]} on {where} ({sizes})."
        if meta.get("only") is not None:
            head = (
                f"Measured {meta['generated_at'][:10]} on {where} ({sizes}): "
                f"{', '.join(meta['runs'])}; the other rows are from each benchmark's last "
                "saved run (`bench/results/<name>.json`)."
            )
    lines = [
        head,
        "",
        "| benchmark | figure | value | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        base = "-" if f.baseline is None else f"{_fmt(f.baseline)} {f.unit} ({f.baseline_name})"
        met = {True: "yes", False: "**no**", None: "-"}[f.met]
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}"
        lines.append(
            f"| {f.bench} | {f.figure} | {_fmt(f.value)} {f.unit} | {base} | {ratio} "
            f"| {f.target or '-'} | {met} |"
        )
    for name in failed:
        lines.append(f"| {name} | **failed to run** (see its log) | - | - | - | - | **no** |")
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = README) -> bool:
    """Replace the table between the markers; False when the README has no markers."""
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table}{END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--no-run", action="store_true", help="only roll up existing results")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    a = parser.parse_args(argv)
    a.results.mkdir(parents=True, exist_ok=True)
    log_dir = a.results / "logs"
    log_dir.mkdir(exist_ok=True)
    failed: list[str] = []
    runs: dict[str, Any] = {}
    for bench in BENCHES:
        if a.only is not None and bench.name not in a.only:
            continue
        if not a.no_run:
            print(f"[run_all] {bench.name} ...", flush=True)
            ok, seconds, log = run(bench, a.quick, log_dir)
            runs[bench.name] = {"ok": ok, "seconds": round(seconds, 1), "log": log}
            print(f"[run_all] {bench.name}: {'ok' if ok else 'FAILED'} in {seconds:.0f}s")
            if not ok:
                failed.append(bench.name)
    figures: list[Figure] = []
    for bench in BENCHES:
        path = a.results / f"{bench.name}.json"
        if bench.name in failed or not path.exists():
            continue
        try:
            figures += bench.extract(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as exc:
            print(f"[run_all] {bench.name}: unreadable results ({exc!r})")
            failed.append(bench.name)
    meta = {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "quick": a.quick,
        "rolled_up_only": a.no_run,
        "only": a.only,
        "runs": runs,
    }
    summary = {
        **meta,
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
        "failed": failed,
    }
    (a.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(figures, failed, meta)
    (a.results / "summary.md").write_text(table)
    print(table)
    if not a.no_readme and not update_readme(table):
        print(f"[run_all] README.md has no {START} / {END} markers; table not inserted")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
