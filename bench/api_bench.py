"""Benchmark: proof lookups through the HTTP API under concurrent load.

Builds a SQLite database with `--recipients` contributors in each of `--epochs` claimable
epochs (allocations and roots as the settler writes them), serves the API with uvicorn on a
free port, and hammers `GET /v1/contributors/{address}/proofs` for random contributors from
`--clients` concurrent httpx.AsyncClient tasks for `--seconds`. Runs, in the same invocation:

- `baseline`: the tree cache disabled (`tree_cache_epochs = 0`): every request rebuilds the
  trees of the claimable epochs from `epoch_allocations`;
- `cached`: the per-epoch tree cache (trees and every proof built once per epoch);
- `cached-2w`: the same with two uvicorn workers.

The load generator runs on the same machine and takes CPU from the server (the figures are
end to end, client included). Public rate limiting is disabled for the run.

    .venv/bin/python bench/api_bench.py [--recipients 10000] [--epochs 3] [--clients 32]

Prints a table and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api.proofs import LEAF_ENCODING  # noqa: E402
from schemas import migrate  # noqa: E402
from schemas.engine import create_engine  # noqa: E402
from schemas.evm import checksum_address  # noqa: E402
from schemas.tables import metadata  # noqa: E402
from settlement.merkle import MerkleTree  # noqa: E402

RESULTS = REPO / "bench" / "results" / "api.json"


def contributors(n: int) -> list[str]:
    return [
        checksum_address(f"0x{(i * 0x9E3779B97F4A7C15 + 7) % (1 << 160):040x}") for i in range(n)
    ]


def populate(url: str, accounts: list[str], epochs: int) -> None:
    """Claimable epochs paying every account, written as the settler writes them."""
    migrate.upgrade(url)
    engine = create_engine(url)
    t = metadata.tables
    ordered = sorted(accounts, key=lambda a: bytes.fromhex(a[2:]))
    with engine.begin() as conn:
        for epoch in range(epochs):
            leaves = [
                (i, a, (i * 7919 + epoch * 104729) % 10**12 + 1) for i, a in enumerate(ordered)
            ]
            tree = MerkleTree.of(leaves, LEAF_ENCODING)
            conn.execute(
                t["epochs"]
                .insert()
                .values(
                    id=epoch,
                    start_time=epoch * 3600,
                    end_time=(epoch + 1) * 3600,
                    status="claimable",
                    root=tree.root,
                    total=sum(amount for _, _, amount in leaves),
                    inputs_hash="0x" + "11" * 32,
                    usage_root="0x" + "22" * 32,
                    tx_hash="0x" + f"{epoch + 1:064x}",
                    block_number=epoch + 1,
                    claimable_at=0,
                    leaf_count=len(leaves),
                    accrual_count=len(leaves),
                    fees_e6=0,
                    computed_at=datetime.now(UTC),
                    committed_at=datetime.now(UTC),
                )
            )
            conn.execute(
                t["epoch_allocations"].insert(),
                [
                    {"epoch_id": epoch, "leaf_index": i, "account": a, "amount": m}
                    for i, a, m in leaves
                ],
            )
    engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    url: str, data_dir: Path, *, cache: int, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "ROYALTY_DB_URL": url,
            "ROYALTY_DATA_DIR": str(data_dir),
            "ROYALTY_API_RATE_LIMIT_PER_S": "0",
            "ROYALTY_API_TREE_CACHE_EPOCHS": str(cache),
            "ROYALTY_LOG_LEVEL": "warning",
        }
    )
    command = [
        sys.executable, "-m", "uvicorn", "api.app:app_from_settings", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not become ready")


async def hammer(
    base: str,
    accounts: list[str],
    clients: int,
    seconds: float,
    expect_epochs: int,
    *,
    path: str = "/v1/contributors/{account}/proofs",
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as http:
        # Warm-up: every worker builds its trees (cached runs) before the clock starts.
        for account in random.Random(1).sample(accounts, 8):
            await http.get(f"/v1/contributors/{account}/proofs")
        stop = time.perf_counter() + seconds

        async def client(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < stop:
                account = rng.choice(accounts)
                started = time.perf_counter()
                try:
                    response = await http.get(path.format(account=account))
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or (
                    expect_epochs and len(response.json()["items"]) != expect_epochs
                ):
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


def server_mean_ms(base: str, route: str) -> float | None:
    """Mean time the server itself spent per request of `route` (its own histogram; one
    worker's when there are several), to tell server cost from client and queueing time."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    label = f'route="{route}"'
    total = count = None
    for line in text.splitlines():
        if label not in line:
            continue
        if line.startswith("api_request_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("api_request_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return round(total / count * 1000, 3) if total is not None and count else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    args = parser.parse_args()

    accounts = contributors(args.recipients)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'royalty.db'}"
        started = time.perf_counter()
        populate(url, accounts, args.epochs)
        print(
            f"populated {args.recipients} x {args.epochs} in {time.perf_counter() - started:.1f}s"
        )
        runs = [
            ("baseline", 0, 1, args.baseline_seconds),
            ("cached", 256, 1, args.seconds),
            ("cached-2w", 256, 2, args.seconds),
        ]
        rows = []
        for name, cache, workers, seconds in runs:
            process, base = serve(url, data_dir, cache=cache, workers=workers)
            try:
                result = asyncio.run(hammer(base, accounts, args.clients, seconds, args.epochs))
                result["server_mean_ms"] = server_mean_ms(base, "/v1/contributors/{address}/proofs")
                if name == "cached":
                    floor = asyncio.run(
                        hammer(base, accounts, args.clients, seconds / 2, 0, path="/healthz")
                    )
            finally:
                process.terminate()
                process.wait(timeout=30)
            row = {"run": name, "tree_cache_epochs": cache, "workers": workers, **result}
            rows.append(row)
            print(
                f"{name:>10}: {row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                f"p99 {row['p99_ms']:7.2f} ms  server {row['server_mean_ms']} ms  "
                f"errors {row['errors']}"
            )

    rows.append({"run": "floor: GET /healthz (no database)", "workers": 1, **floor})
    print(f"{'healthz':>10}: {floor['requests_per_s']:8.1f} req/s  p99 {floor['p99_ms']:7.2f} ms")
    report = {
        "what": "GET /v1/contributors/{address}/proofs for random contributors, "
        f"{args.recipients} recipients x {args.epochs} claimable epochs, SQLite, "
        f"{args.clients} concurrent httpx clients on the same machine",
        "targets": {"requests_per_s": 2000, "p99_ms": 50},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
        },
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"saved {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
