"""Benchmark: proof lookups through the HTTP API under concurrent load.

Builds a SQLite database with `--recipients` contributors in each of `--epochs` claimable
epochs (allocations and roots as the settler writes them), serves the API with uvicorn as a
deployment on the machine would (`--http httptools --loop uvloop`, one worker unless stated),
and drives `GET /v1/contributors/{address}/proofs` for random contributors with `--clients`
keep-alive connections for `--seconds`. The load generator is `wrk` (a Lua script picks a
random contributor per request) when installed, else a minimal asyncio HTTP/1.1 client on raw
sockets in a separate process; either costs far less CPU than the server. Runs, in the same
invocation:

- `baseline`: the tree cache disabled (`tree_cache_epochs = 0`): every request rebuilds the
  trees of the claimable epochs from `epoch_allocations` and reads the claims (one connection:
  a request takes seconds, more connections only queue);
- `cached`: trees, proofs and claims served from memory (the proof view), one worker;
- `cached-2w`: the same with two workers;
- `/healthz` on the cached server: the floor of the HTTP stack on the machine.

Public rate limiting is disabled for the run. The load generator shares the machine's cores.

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
import shutil
import socket
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
TARGET_RPS = 2000
TARGET_P99_MS = 50.0
PROOFS = "/v1/contributors/{account}/proofs"

WRK_SCRIPT = r"""
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d," ..
    "\"mean_us\":%f,\"errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean,
    errors.connect + errors.read + errors.write + errors.status + errors.timeout))
end
"""


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
        "--http", "httptools", "--loop", "uvloop",
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


def warm_up(base: str, accounts: list[str], expect_epochs: int, rounds: int) -> None:
    """Build every worker's trees before the clock starts, and check the answers."""
    with httpx.Client(base_url=base, timeout=600) as http:
        for account in random.Random(1).sample(accounts, rounds):
            response = http.get(PROOFS.format(account=account))
            items = response.json()["items"]
            if response.status_code != 200 or len(items) != expect_epochs:
                raise RuntimeError(f"unexpected answer: {response.status_code} {items!r:.200}")


def run_wrk(base: str, paths: Path, clients: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="api-bench-wrk-") as tmp:
        script = Path(tmp) / "proofs.lua"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        command = [
            "wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds:g}s", "--timeout", "120s",
            "-s", str(script), base,
        ]  # fmt: skip
        env = dict(os.environ, BENCH_PATHS=str(paths))
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    elapsed = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": raw["errors"],
        "seconds": round(elapsed, 2),
        "requests_per_s": round(raw["requests"] / elapsed, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "mean_ms": round(raw["mean_us"] / 1000, 2),
    }


async def _raw_load(
    host: str, port: int, paths: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """Keep-alive HTTP/1.1 GETs on raw sockets: just enough HTTP to read each response."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < stop:
            path = rng.choice(paths)
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for header in head.split(b"\r\n"):
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {
        "requests": len(ordered),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(ordered) / elapsed, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 2),
    }


def run_raw(base: str, paths: Path, clients: int, seconds: float) -> dict[str, Any]:
    """The raw-socket load generator, in a process of its own (off the bench's own GIL)."""
    host, port = base.removeprefix("http://").split(":")
    command = [
        sys.executable, __file__, "--load-only", host, port, str(paths), str(clients),
        str(seconds),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def load(base: str, paths: Path, clients: int, seconds: float) -> dict[str, Any]:
    if shutil.which("wrk"):
        return run_wrk(base, paths, clients, seconds) | {"load_generator": "wrk"}
    return run_raw(base, paths, clients, seconds) | {"load_generator": "asyncio raw sockets"}


def server_mean_ms(base: str, route: str) -> float | None:
    """Mean time the server itself spent per request of `route` (its own histogram; one
    worker's when there are several), to tell server cost from client and queueing time."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    label = f'route="{route}"'
    total = count = None
    for line in text.splitlines():
        if label not in line:
            continue
        if line.startswith("royalty_api_request_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("royalty_api_request_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return round(total / count * 1000, 3) if total is not None and count else None


def figures(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    cached, baseline = runs["cached"], runs["baseline"]
    return [
        {
            "figure": "proof lookups/s (concurrent clients, 1 worker)",
            "value": cached["requests_per_s"],
            "unit": "req/s",
            "baseline": baseline["requests_per_s"],
            "baseline_name": "no tree cache",
            "target": f">= {TARGET_RPS:,}/s",
            "met": cached["requests_per_s"] >= TARGET_RPS and cached["errors"] == 0,
        },
        {
            "figure": "proof lookup p99 (concurrent clients, 1 worker)",
            "value": cached["p99_ms"],
            "unit": "ms",
            "baseline": baseline["p99_ms"],
            "baseline_name": "no tree cache",
            "target": f"< {TARGET_P99_MS:g} ms",
            "met": cached["p99_ms"] < TARGET_P99_MS,
        },
        {
            "figure": "proof lookup p50 (concurrent clients, 1 worker)",
            "value": cached["p50_ms"],
            "unit": "ms",
            "baseline": baseline["p50_ms"],
            "baseline_name": "no tree cache",
        },
        {
            "figure": "server time per proof lookup",
            "value": cached["server_mean_ms"],
            "unit": "ms",
            "baseline": baseline["server_mean_ms"],
            "baseline_name": "no tree cache",
        },
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-only":
        host, port, path_file, clients, seconds = sys.argv[2:7]
        lines = Path(path_file).read_text(encoding="utf-8").split()
        result = asyncio.run(_raw_load(host, int(port), lines, int(clients), float(seconds)))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
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
        paths = data_dir / "paths.txt"
        paths.write_text("\n".join(PROOFS.format(account=a) for a in accounts) + "\n")
        healthz = data_dir / "healthz.txt"
        healthz.write_text("/healthz\n")
        runs = [
            ("baseline", 0, 1, 1, args.baseline_seconds),
            ("cached", 256, 1, args.clients, args.seconds),
            ("cached-2w", 256, 2, args.clients, args.seconds),
        ]
        rows: dict[str, dict[str, Any]] = {}
        for name, cache, workers, clients, seconds in runs:
            process, base = serve(url, data_dir, cache=cache, workers=workers)
            try:
                warm_up(base, accounts, args.epochs, 1 if cache == 0 else 8 * workers)
                result = load(base, paths, clients, seconds)
                result["server_mean_ms"] = server_mean_ms(base, "/v1/contributors/{address}/proofs")
                if name == "cached":
                    floor = load(base, healthz, args.clients, seconds / 2)
            finally:
                process.terminate()
                process.wait(timeout=30)
            row = {
                "run": name,
                "tree_cache_epochs": cache,
                "workers": workers,
                "clients": clients,
                **result,
            }
            rows[name] = row
            print(
                f"{name:>10}: {row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']:8.2f} ms  "
                f"p99 {row['p99_ms']:8.2f} ms  server {row['server_mean_ms']} ms  "
                f"errors {row['errors']}  ({row['load_generator']})"
            )

    rows["healthz"] = {
        "run": "floor: GET /healthz (no database)",
        "workers": 1,
        "clients": args.clients,
        **floor,
    }
    print(f"{'healthz':>10}: {floor['requests_per_s']:8.1f} req/s  p99 {floor['p99_ms']:8.2f} ms")
    report = {
        "what": "GET /v1/contributors/{address}/proofs for random contributors, "
        f"{args.recipients} recipients x {args.epochs} claimable epochs, SQLite, uvicorn "
        f"httptools+uvloop, {args.clients} keep-alive connections from "
        f"{rows['cached']['load_generator']} on the same machine",
        "command": "bench/api_bench.py " + " ".join(sys.argv[1:]),
        "targets": {"requests_per_s": TARGET_RPS, "p99_ms": TARGET_P99_MS},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "figures": figures(rows),
        "results": list(rows.values()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"saved {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
