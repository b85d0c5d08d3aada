"""Benchmark: Merkle tree + every proof, settlement.merkle vs @openzeppelin/merkle-tree.

For each size, both build a StandardMerkleTree of the same (index, account, amount) leaves and
the proof of every leaf, in the same run and on the same machine; the roots must match. Leaf
generation is not timed. OZ's getProof also re-verifies each proof (our `proofs()` does not:
the tests verify every proof), so the OZ column includes that work. OZ runs in its own node
process per size under a time limit.

    .venv/bin/python bench/merkle_bench.py [--sizes 10000 100000 1000000] [--oz-timeout 600]

Prints a table and writes bench/results/merkle.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from settlement.merkle import MerkleTree, hashing_backend  # noqa: E402

NODE_MODULES = REPO / "contracts" / "node_modules"
OZ_SCRIPT = REPO / "bench" / "oz_merkle_bench.mjs"
RESULTS = REPO / "bench" / "results" / "merkle.json"
ENCODING = ("uint256", "address", "uint256")


def leaves(n: int) -> list[tuple[int, str, int]]:
    """The benchmark's leaves; oz_merkle_bench.mjs generates the very same ones."""
    return [
        (
            i,
            f"0x{(i * 0x9E3779B97F4A7C15 + 0x1234567) % (1 << 160):040x}",
            i * 1_000_003 % 10**24 + 1,
        )
        for i in range(n)
    ]


def bench_python(n: int, repeat: int) -> dict[str, Any]:
    values = leaves(n)
    best: dict[str, Any] | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        tree = MerkleTree.of(values, ENCODING)
        built = time.perf_counter()
        proofs = tree.proofs()
        done = time.perf_counter()
        assert len(proofs) == n
        run = {
            "root": tree.root,
            "build_s": built - start,
            "proofs_s": done - built,
            "total_s": done - start,
        }
        if best is None or run["total_s"] < best["total_s"]:
            best = run
        del tree, proofs
    assert best is not None
    return best


def bench_oz(n: int, timeout_s: float) -> dict[str, Any]:
    try:
        completed = subprocess.run(
            ["node", "--max-old-space-size=12288", str(OZ_SCRIPT), str(n)],
            capture_output=True,
            text=True,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"timeout": True, "limit_s": timeout_s}
    if completed.returncode != 0:
        return {"error": completed.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unavailable"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--oz-timeout", type=float, default=600.0)
    parser.add_argument("--repeat", type=int, default=3, help="best of N below 10^6 leaves")
    args = parser.parse_args()

    rows = []
    for n in args.sizes:
        ours = bench_python(n, args.repeat if n < 1_000_000 else 1)
        oz = bench_oz(n, args.oz_timeout)
        rows.append(
            {"n": n, "python": ours, "oz": oz, "roots_match": oz.get("root") == ours["root"]}
        )

    print(f"{'leaves':>9} | {'ours build':>10} {'proofs':>8} {'total':>8} | "
          f"{'OZ build':>9} {'proofs':>8} {'total':>8} | speed-up | roots")  # fmt: skip
    for row in rows:
        ours, oz = row["python"], row["oz"]
        if "total_s" in oz:
            oz_cols = f"{oz['build_s']:9.2f} {oz['proofs_s']:8.2f} {oz['total_s']:8.2f}"
            speedup = f"{oz['total_s'] / ours['total_s']:7.1f}x"
        else:
            reason = f"timeout {oz['limit_s']:.0f}s" if oz.get("timeout") else "error"
            oz_cols, speedup = f"{reason:>27}", f"{'-':>8}"
        print(
            f"{row['n']:>9} | {ours['build_s']:10.2f} {ours['proofs_s']:8.2f} "
            f"{ours['total_s']:8.2f} | {oz_cols} | {speedup} | {row['roots_match']}"
        )

    report = {
        "what": "StandardMerkleTree of (index, account, amount) leaves + proofs of every leaf",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "node": node_version(),
            "keccak": hashing_backend(),
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        },
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"saved {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
