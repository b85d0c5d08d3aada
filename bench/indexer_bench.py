"""Benchmark: backfill of >= 100,000 chain events from anvil into PostgreSQL, against the raw
`eth_getLogs` fetch rate over the same range measured in the same run (the ceiling).

Generation (timed separately): the system is deployed on a fresh anvil, automine is turned
off, and stakers send `Staking.stake` transactions (one `Staked` event each) and the operator
mints licenses (`Transfer` + `LicenseMinted`) in JSON-RPC batches of `eth_sendTransaction`,
mined `--per-block` at a time with `anvil_mine`.

Then, over the deployment's whole block range, `--runs` times on the same generated chain:
1. raw fetch: `RpcChainSource.logs` over the same adaptive ranges as the follower's (the same
   initial size, maximum and log target), one after the other, nothing else;
2. index: the follower (decode, project, chain_events, outbox, checkpoint, one transaction per
   range, the next deep range's logs fetched and decoded while the current one is written; the
   outbox relayed to the in-memory bus) into a fresh database of a durable PostgreSQL (fsync
   on).

The headline figures are those of the median run (by index rate); every run is listed.

    .venv/bin/python bench/indexer_bench.py [--events 100000] [--per-block 200] [--runs 3]

Prints a table and writes bench/results/indexer.json (only for runs of >= 100,000 events,
unless `--output` says where). Each run also records the benchmark process's CPU seconds for
both phases (`cpu_seconds`; the index's include its fetch-ahead thread): on a shared machine
the wall-clock rates follow the load, the CPU seconds much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy.pool import NullPool  # noqa: E402

from deploy.local import Anvil, Postgres  # noqa: E402
from indexer.decoding import LogDecoder  # noqa: E402
from indexer.follower import Follower, FollowerConfig  # noqa: E402
from indexer.messages import CHAIN_EVENT_TYPE  # noqa: E402
from indexer.publisher import MemoryChainPublisher  # noqa: E402
from indexer.ranges import AdaptiveRange  # noqa: E402
from indexer.rpc import RpcChainSource  # noqa: E402
from schemas import migrate  # noqa: E402
from schemas.engine import create_engine  # noqa: E402
from settlement.chain import (  # noqa: E402
    ChainClient,
    DeploymentConfig,
    System,
    deploy_system,
    dev_account,
)

RESULTS = REPO / "bench" / "results" / "indexer.json"
MODEL = 1
STAKERS = range(5, 17)  # anvil dev accounts used as stakers
GAS = 200_000


def rpc_batch(url: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    body = json.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback anvil
        url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
        replies = json.loads(response.read())
    errors = [r["error"] for r in replies if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} failed calls, first: {errors[0]}")
    return [r["result"] for r in sorted(replies, key=lambda r: r["id"])]


def generate(anvil: Anvil, system: System, events: int, per_block: int) -> dict[str, Any]:
    """Send cheap event-emitting transactions until `events` indexed events exist."""
    started = time.perf_counter()
    operator, deployer = dev_account(4), dev_account(0)
    system.model_registry.register_model(operator, MODEL, operator.address, "bench")
    token = system.governance_token
    stakers = [dev_account(i) for i in STAKERS]
    for staker in stakers:
        token.transfer(deployer, staker.address, 10**22)
        token.approve(staker, system.staking.address, 2**255)
    anvil.rpc("evm_setAutomine", [False])
    anvil.rpc("evm_setBlockGasLimit", [hex(per_block * GAS * 2)])
    stake_data = "0x" + system.staking.encode("stake", MODEL, 1).hex()
    mints = events // 20  # a license mint emits two events (Transfer, LicenseMinted)
    stakes = events - 2 * mints
    mint = system.license_nft
    nonces: dict[str, int] = {
        account.address: int(anvil.rpc("eth_getTransactionCount", [account.address, "pending"]), 16)
        for account in [*stakers, operator]
    }

    def tx(sender: str, to: str, data: str) -> dict[str, str]:
        # Explicit nonces: anvil serves a batch concurrently and would hand out one twice.
        nonce, nonces[sender] = nonces[sender], nonces[sender] + 1
        return {"from": sender, "to": to, "data": data, "gas": hex(GAS), "nonce": hex(nonce)}

    txs: list[dict[str, str]] = []
    minted = 0
    for i in range(stakes):
        txs.append(tx(stakers[i % len(stakers)].address, system.staking.address, stake_data))
        if i % 18 == 17 and minted < mints:  # mix event kinds within blocks
            data = mint.encode("mint", MODEL, stakers[minted % len(stakers)].address, 1000 + i, 0)
            txs.append(tx(operator.address, mint.address, "0x" + data.hex()))
            minted += 1
    while minted < mints:
        data = mint.encode("mint", MODEL, stakers[0].address, 10**9 + minted, 0)
        txs.append(tx(operator.address, mint.address, "0x" + data.hex()))
        minted += 1
    blocks = 0
    for start in range(0, len(txs), per_block):
        rpc_batch(
            anvil.rpc_url, [("eth_sendTransaction", [tx]) for tx in txs[start : start + per_block]]
        )
        anvil.rpc("anvil_mine", ["0x1"])
        blocks += 1
    anvil.rpc("evm_setAutomine", [True])
    return {
        "transactions": len(txs),
        "stakes": stakes,
        "license_mints": mints,
        "blocks_mined": blocks,
        "seconds": time.perf_counter() - started,
    }


def raw_fetch(
    source: RpcChainSource, addresses: tuple[str, ...], start: int, head: int, max_range: int
) -> dict[str, Any]:
    """eth_getLogs over the range with the follower's adaptive ranges, and nothing else."""
    config = FollowerConfig(start_block=start, max_block_range=max_range)
    target = config.target_range_logs
    ranges = AdaptiveRange(
        maximum=max_range,
        size=min(config.initial_block_range, max_range) if target is not None else 0,
        target_logs=target,
    )
    began, cpu = time.perf_counter(), time.process_time()
    logs, block = 0, start
    while block <= head:
        end = ranges.end(block, head)
        fetched = len(source.logs(block, end, addresses))
        logs += fetched
        ranges.succeeded(end - block + 1, fetched)
        block = end + 1
    seconds = time.perf_counter() - began
    return {
        "logs": logs,
        "blocks": head - start + 1,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
    }


def index(
    source: RpcChainSource, system: System, url: str, head: int, max_range: int
) -> dict[str, Any]:
    engine = create_engine(url, poolclass=NullPool)
    publisher = MemoryChainPublisher()
    config = FollowerConfig(
        start_block=system.manifest.deploy_block, confirmations=2, max_block_range=max_range
    )
    follower = Follower(source, LogDecoder.for_manifest(system.manifest), engine, config, publisher)
    began, cpu = time.perf_counter(), time.process_time()
    events = blocks = 0
    while True:
        result = follower.step()
        follower.relay()
        events += result.events
        blocks += result.blocks
        if result.kind == "idle":
            break
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    follower.close()
    engine.dispose()
    assert follower.checkpoint().block_number == head
    published = sum(1 for m in publisher.messages if m.message_type == CHAIN_EVENT_TYPE)
    return {
        "events": events,
        "blocks": blocks,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "published": published,
    }


def _rates(raw: dict[str, Any], indexed: dict[str, Any]) -> dict[str, Any]:
    raw_rate = raw["logs"] / raw["seconds"]
    index_rate = indexed["events"] / indexed["seconds"]
    return {
        "raw_fetch": {
            **raw,
            "logs_per_s": raw_rate,
            "blocks_per_s": raw["blocks"] / raw["seconds"],
        },
        "index": {
            **indexed,
            "events_per_s": index_rate,
            "blocks_per_s": indexed["blocks"] / indexed["seconds"],
        },
        "ratio_raw_over_index": raw_rate / index_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-block", type=int, default=200)
    parser.add_argument("--max-block-range", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="index runs on the generated chain")
    parser.add_argument("--output", type=Path, default=None, help=f"default: {RESULTS}")
    args = parser.parse_args()
    output = args.output or (RESULTS if args.events >= 100_000 else None)
    work = Path(tempfile.mkdtemp(prefix="indexer-bench-"))
    anvil = Anvil(work / "anvil", accounts=20).start()
    postgres = Postgres(work / "postgres", durable=True).start()
    runs: list[dict[str, Any]] = []
    try:
        client = ChainClient.connect(anvil.rpc_url)
        client.poll_latency_s = 0.005
        manifest = deploy_system(
            client,
            dev_account(0),
            DeploymentConfig(
                settler=dev_account(1).address,
                guardian=dev_account(2).address,
                treasury=dev_account(3).address,
                stake_cooldown_s=0,
            ),
        )
        system = System.connect(client, manifest)
        generation = generate(anvil, system, args.events, args.per_block)
        head = client.block_number()
        source = RpcChainSource([anvil.rpc_url], timeout_s=120)
        addresses = LogDecoder.for_manifest(manifest).addresses
        for run in range(args.runs):
            load = os.getloadavg()[0]
            raw = raw_fetch(source, addresses, manifest.deploy_block, head, args.max_block_range)
            url = postgres.create_database(f"bench{run}")
            migrate.upgrade(url)
            indexed = index(source, system, url, head, args.max_block_range)
            runs.append({"load_average_1m": load, **_rates(raw, indexed)})
            print(
                f"run {run + 1}: raw {runs[-1]['raw_fetch']['logs_per_s']:.0f} logs/s, "
                f"index {runs[-1]['index']['events_per_s']:.0f} events/s, "
                f"ratio {runs[-1]['ratio_raw_over_index']:.2f} (load {load:.1f}; cpu "
                f"{raw['cpu_seconds']:.2f} s raw, {indexed['cpu_seconds']:.2f} s index)"
            )
    finally:
        postgres.stop()
        anvil.stop()
    median = sorted(runs, key=lambda r: r["index"]["events_per_s"])[len(runs) // 2]
    defaults = FollowerConfig(start_block=0)
    raw, indexed = median["raw_fetch"], median["index"]
    raw_rate, index_rate = raw["logs_per_s"], indexed["events_per_s"]
    result = {
        "what": "backfill from anvil into PostgreSQL (fsync on) vs raw eth_getLogs, same range",
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        },
        "generation": generation,
        "range": {
            "from": manifest.deploy_block,
            "to": head,
            "max_block_range": args.max_block_range,
            "initial_block_range": defaults.initial_block_range,
            "target_range_logs": defaults.target_range_logs,
        },
        "headline": f"median of {len(runs)} runs on the same chain, each into a fresh database",
        "raw_fetch": raw,
        "index": indexed,
        "ratio_raw_over_index": median["ratio_raw_over_index"],
        "targets": {
            "events_per_s_min": 5000,
            "within_2x_of_raw": median["ratio_raw_over_index"] <= 2.0,
            "events_per_s_met": index_rate >= 5000,
        },
        "runs": runs,
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"generated {generation['transactions']} txs in {generation['blocks_mined']} blocks "
        f"in {generation['seconds']:.1f} s; median of {len(runs)} runs:"
    )
    print(f"{'':<12}{'events':>10}{'blocks':>10}{'seconds':>10}{'events/s':>12}{'blocks/s':>12}")
    print(
        f"{'raw fetch':<12}{raw['logs']:>10}{raw['blocks']:>10}{raw['seconds']:>10.2f}"
        f"{raw_rate:>12.0f}{raw['blocks_per_s']:>12.0f}"
    )
    print(
        f"{'index (pg)':<12}{indexed['events']:>10}{indexed['blocks']:>10}"
        f"{indexed['seconds']:>10.2f}{index_rate:>12.0f}{indexed['blocks_per_s']:>12.0f}"
    )
    print(
        f"raw / index = {median['ratio_raw_over_index']:.2f}x (target <= 2x); "
        f"{index_rate:.0f} events/s (target >= 5000)"
    )


if __name__ == "__main__":
    main()
