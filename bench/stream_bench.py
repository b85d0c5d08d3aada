"""Benchmark: throughput of the stream join (usage ⨝ chain → accruals) on N signed usage
events, the same input through the three engines, each into a fresh PostgreSQL database:

1. embedded runner (`stream.embedded`): the events as an in-process log, chain state read from
   the indexer's tables, batches of `--batch` (the baseline: no Kafka at all);
2. kafka-python worker (`stream.app`, in a thread of this process): `usage` topic in, accruals
   and dead letters produced to Kafka (acks=all) before each commit, chain from the `chain`
   topic;
3. faust worker (`stream.faust_app`, a subprocess): the same through faust / aiokafka.

Setup (not timed): a fresh anvil with the system deployed, three models registered with one
license each, the chain indexed into the first database and published to the `chain` topic,
and the N events (3 units each, times inside the finalized chain, spread over the models)
produced to `usage` before any worker starts. A worker's rate is N over the time from its
first committed decision to its last (group join and chain catch-up excluded; the time from
start is listed too).

    .venv/bin/python bench/stream_bench.py [--events 20000] [--batch 500]

Prints a table and writes bench/results/stream.json (only for runs of >= 20,000 events,
unless `--output` says where).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import structlog  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from deploy.local import Anvil, KafkaBroker, Postgres  # noqa: E402
from metering.keyfiles import write_json_atomic  # noqa: E402
from metering.signing import KeyRing, Signer, SigningKey  # noqa: E402
from schemas import migrate  # noqa: E402
from schemas.engine import create_engine  # noqa: E402
from schemas.usage import UsageData, UsageEvent, encode_usage_event  # noqa: E402
from stream.app import WorkerConfig  # noqa: E402
from stream.embedded import EmbeddedJoinRunner, numbered  # noqa: E402
from stream.epochs import EpochClock  # noqa: E402
from tests.contracts.contract_helpers import (  # noqa: E402
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)
from tests.stream.worker_support import (  # noqa: E402
    ThreadWorker,
    Topics,
    decided_count,
    index_into_topic,
    produce_usage,
)

RESULTS = REPO / "bench" / "results" / "stream.json"
EPOCH_S = 3_600
MODELS = (1, 2, 3)
TARGET_WORKER_EVENTS_PER_S = 1_000


def script_chain(chain: ChainHarness, system: Any) -> tuple[int, dict[int, int]]:
    """Register the models and mint one license each; (genesis time, license per model)."""
    operator = chain.actors.operator
    genesis = chain.now() + 10
    chain.next_block_at(genesis)
    licenses = {}
    for model in MODELS:
        system.model_registry.register_model(operator, model, operator.address, f"m{model}")
        licenses[model] = system.license_nft.mint(
            operator, model, chain.actors.alice.address, 1_000
        )
    chain.advance_time(EPOCH_S)  # the usage times below lie inside the finalized chain
    return genesis, licenses


def usage_events(n: int, genesis: int, licenses: dict[int, int]) -> tuple[KeyRing, list[bytes]]:
    signer = Signer(SigningKey.generate("hmac-sha256", prefix="bench"))
    messages = []
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        event = UsageEvent.create(
            id=f"bench:{i}",
            source="//metering/bench",
            time=datetime.fromtimestamp(genesis + 100 + i % 1_000, UTC),
            data=UsageData(model_id=model, license_id=licenses[model], units=3),
            keyid=signer.keyid,
        )
        messages.append(encode_usage_event(signer.sign(event)))
    return KeyRing([signer.key.verification_key()]), messages


def wait_decided(engine: Engine, n: int, timeout_s: float) -> tuple[float, float]:
    """Poll until `n` decisions are committed; (first seen, all seen) monotonic times."""
    first = None
    deadline = time.monotonic() + timeout_s
    while True:
        done = sum(decided_count(engine))
        now = time.monotonic()
        if done and first is None:
            first = now
        if done >= n:
            return first or now, now
        if now > deadline:
            raise RuntimeError(f"only {done} of {n} events decided after {timeout_s}s")
        time.sleep(0.02)


def rate(n: int, started: float, first: float, last: float) -> dict[str, Any]:
    return {
        "events": n,
        "seconds": last - first,
        "seconds_from_start": last - started,
        "events_per_s": n / (last - first) if last > first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="max records per batch")
    parser.add_argument("--output", type=Path, default=None, help=f"default: {RESULTS}")
    args = parser.parse_args()
    output = args.output or (RESULTS if args.events >= 20_000 else None)
    n = args.events
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    anvil = Anvil(work / "anvil").start()
    postgres = Postgres(work / "postgres").start()
    broker = KafkaBroker(work / "kafka").start()
    results: dict[str, dict[str, Any]] = {}
    faust_process: subprocess.Popen[bytes] | None = None
    try:
        actors = dev_actors()
        system = deploy_test_system(connect_fast(anvil.rpc_url), actors)
        chain = ChainHarness(anvil, system.royalty_policy.client, actors)
        genesis, licenses = script_chain(chain, system)
        ring, messages = usage_events(n, genesis, licenses)
        servers, topics = broker.bootstrap_servers, Topics.unique()
        chain_id = system.manifest.chain_id
        clock = EpochClock(EPOCH_S, genesis)
        urls = {name: postgres.create_database(name) for name in ("embedded", "kafka", "faust")}
        for url in urls.values():
            migrate.upgrade(url)
        # The embedded database gets the indexed chain; the topic gets the same events.
        index_into_topic(system, chain, urls["embedded"], servers, topics.chain)
        produce_usage(servers, topics.usage, messages)

        engine = create_engine(urls["embedded"], poolclass=NullPool)
        runner = EmbeddedJoinRunner(engine, chain_id, ring, clock, batch_size=args.batch)
        started = time.monotonic()
        runner.process(numbered(messages))
        results["embedded"] = rate(n, started, started, time.monotonic())
        assert sum(decided_count(engine)) == n
        engine.dispose()

        config = WorkerConfig(
            bootstrap_servers=servers,
            db_url=urls["kafka"],
            chain_id=chain_id,
            key_ring=ring,
            clock=clock,
            usage_topic=topics.usage,
            chain_topic=topics.chain,
            accruals_topic=topics.accruals,
            dead_letter_topic=topics.dead_letter,
            group_id=f"{topics.group}-kafka",
            component=topics.component,
            max_records=args.batch,
        )
        engine = create_engine(urls["kafka"], poolclass=NullPool)
        started = time.monotonic()
        worker = ThreadWorker(config).start()
        try:
            first, last = wait_decided(engine, n, 600)
        finally:
            worker.stop()
        results["kafka-python"] = rate(n, started, first, last)
        engine.dispose()

        ring_file = work / "keyring.json"
        write_json_atomic(ring_file, ring.to_json())
        engine = create_engine(urls["faust"], poolclass=NullPool)
        started = time.monotonic()
        command = [
            sys.executable, "-m", "stream.faust_app",
            "--bootstrap-servers", servers, "--db-url", urls["faust"],
            "--chain-id", str(chain_id), "--key-ring", str(ring_file),
            "--epoch-length", str(EPOCH_S), "--epoch-genesis", str(genesis),
            "--usage-topic", topics.usage, "--chain-topic", topics.chain,
            "--accruals-topic", topics.accruals, "--dead-letter-topic", topics.dead_letter,
            "--group-id", f"{topics.group}-faust", "--component", topics.component,
            "--max-records", str(args.batch),
        ]  # fmt: skip
        faust_process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=(work / "faust.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        first, last = wait_decided(engine, n, 600)
        results["faust"] = rate(n, started, first, last)
        engine.dispose()
    finally:
        if faust_process is not None and faust_process.poll() is None:
            faust_process.terminate()
            faust_process.wait(timeout=60)
        broker.stop()
        postgres.stop()
        anvil.stop()

    embedded = results["embedded"]["events_per_s"]
    kafka = results["kafka-python"]["events_per_s"]
    faust = results["faust"]["events_per_s"]
    figures = [
        {
            "figure": "stream join, embedded runner",
            "value": embedded,
            "unit": "events/s",
            "baseline": None,
            "baseline_name": "",
            "target": "baseline of the Kafka engines",
            "met": None,
        },
        {
            "figure": "stream join, kafka-python worker",
            "value": kafka,
            "unit": "events/s",
            "baseline": embedded,
            "baseline_name": "embedded runner (no Kafka)",
            "target": f">= {TARGET_WORKER_EVENTS_PER_S} events/s",
            "met": kafka >= TARGET_WORKER_EVENTS_PER_S,
        },
        {
            "figure": "stream join, faust worker",
            "value": faust,
            "unit": "events/s",
            "baseline": kafka,
            "baseline_name": "kafka-python worker",
            "target": f">= {TARGET_WORKER_EVENTS_PER_S} events/s",
            "met": faust >= TARGET_WORKER_EVENTS_PER_S,
        },
    ]
    doc = {
        "what": f"stream join of {n} signed usage events into PostgreSQL, by engine",
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0],
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        },
        "setup": {
            "events": n,
            "batch": args.batch,
            "models": len(MODELS),
            "usage_partitions": 3,
            "postgres": "local throwaway cluster (fsync off)",
            "rate": "events / (last commit - first commit); seconds_from_start adds startup",
        },
        "figures": figures,
        "results": results,
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{n} events, batches of {args.batch}:")
    print(f"{'engine':<14}{'seconds':>10}{'from start':>12}{'events/s':>12}")
    for name, r in results.items():
        print(
            f"{name:<14}{r['seconds']:>10.2f}{r['seconds_from_start']:>12.2f}"
            f"{r['events_per_s'] or 0:>12.0f}"
        )


if __name__ == "__main__":
    main()
