"""Benchmark (issue #6): sustained usage events/s through ONE stream worker with real Kafka, and
end-to-end latency from produce to committed accrual row, against a plain aiokafka
consume-and-commit loop over the same topic in the same run (the ceiling).

Setup (not timed): a fresh anvil with the system deployed, 2 models with 2 licenses each, the
chain indexed (confirmations 0, so finalized past every usage time) into PostgreSQL and
published to a `chain` topic; N signed usage events (`--algorithm`, Ed25519 by default, as the
metering nodes sign) over the 4 licenses, keyed by model into a 3-partition `usage` topic.

Measured, each worker in its own process on a fresh database (PostgreSQL with its durable
default settings: fsync on, synchronous commit):

1. ceiling: an aiokafka consumer group reading the N messages, committing offsets after each
   fetch (no parsing, no database);
2. kafka-python worker (`python -m stream.app`) and 3. faust worker (`python -m
   stream.faust_app`): throughput = N / (last commit - first commit) draining the backlog of N;
   then latency: `--latency-events` (N / 5) more events produced at `--latency-rate` events/s
   (by default half the rate the worker drained the backlog at: a load it keeps up with)
   while the worker runs, each one's latency = when its accrual row was first seen committed
   (the database is polled every 10 ms, so add up to 10 ms) - when it was handed to the
   producer;
4. embedded runner (`stream.embedded`, in-process log, no Kafka), chain state from the indexed
   projections, into PostgreSQL and SQLite.

    .venv/bin/python bench/stream_bench.py [--events 100000] [--algorithm ed25519]
        [--engines kafka-python,faust,embedded-postgresql,embedded-sqlite] [--profile DIR]

Prints a table and writes bench/results/stream.json (runs of >= 20,000 events, unless
`--output` says where).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
import structlog  # noqa: E402
from kafka import KafkaProducer  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from deploy.local import Anvil, KafkaBroker, Postgres  # noqa: E402
from metering.ed25519 import default_backend  # noqa: E402
from metering.keyfiles import write_json_atomic  # noqa: E402
from metering.signing import Algorithm, KeyRing, Signer, SigningKey  # noqa: E402
from schemas import migrate  # noqa: E402
from schemas.engine import create_engine  # noqa: E402
from schemas.tables import metadata  # noqa: E402
from schemas.usage import UsageData, UsageEvent, encode_usage_event  # noqa: E402
from settlement.chain import System  # noqa: E402
from stream.embedded import EmbeddedJoinRunner, numbered  # noqa: E402
from stream.epochs import EpochClock  # noqa: E402
from tests.contracts.contract_helpers import (  # noqa: E402
    ChainHarness,
    connect_fast,
    deploy_test_system,
    dev_actors,
)
from tests.indexer.support import index_to_head, make_follower  # noqa: E402
from tests.stream.worker_support import Topics, index_into_topic, produce_usage  # noqa: E402

RESULTS = REPO / "bench" / "results" / "stream.json"
EPOCH_S = 3_600
MODELS = (1, 2)
LICENSES_PER_MODEL = 2
TARGET_EVENTS_PER_S = 10_000
TARGET_SHARE_OF_CEILING = 0.5
TARGET_P99_S = 2.0
POLL_S = 0.01
ENGINES = ("kafka-python", "faust", "embedded-postgresql", "embedded-sqlite")
_accruals = metadata.tables["accruals"]


def script_chain(chain: ChainHarness, system: System) -> tuple[int, list[tuple[int, int]]]:
    """Register the models and mint their licenses; (genesis time, [(model, license)])."""
    operator = chain.actors.operator
    genesis = chain.now() + 10
    chain.next_block_at(genesis)
    licenses = []
    for model in MODELS:
        system.model_registry.register_model(operator, model, operator.address, f"m{model}")
        for _ in range(LICENSES_PER_MODEL):
            holder = chain.actors.alice.address
            licenses.append((model, system.license_nft.mint(operator, model, holder, 1_000)))
    chain.advance_time(EPOCH_S)  # the usage times below lie inside the finalized chain
    return genesis, licenses


def usage_events(
    n: int, genesis: int, licenses: list[tuple[int, int]], algorithm: Algorithm, prefix: str
) -> tuple[KeyRing, list[bytes]]:
    signer = Signer(SigningKey.generate(algorithm, prefix="bench"))
    messages = []
    for i in range(n):
        model, license_id = licenses[i % len(licenses)]
        event = UsageEvent.create(
            id=f"{prefix}:{i}",
            source="//metering/bench",
            time=datetime.fromtimestamp(genesis + 100 + i % 1_000, UTC),
            data=UsageData(model_id=model, license_id=license_id, units=3),
            keyid=signer.keyid,
        )
        messages.append(encode_usage_event(signer.sign(event)))
    return KeyRing([signer.key.verification_key()]), messages


class CommitWatch:
    """Polls the accruals table every `POLL_S`: when each usage id was first seen committed."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)
        self.seen: dict[str, float] = {}
        self.backend_pid: int | None = None
        """The PostgreSQL server process serving the watcher's polls (None on SQLite): its
        CPU is the measurement's, not the worker's, and is left out of the server's."""
        self._last_id = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CommitWatch:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the commit watcher did not connect")
        return self

    def _run(self) -> None:
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Without statistics on the fresh table, the planner takes `id > :last` for
                # a third of the rows and scans the whole table on every poll: a cost that
                # grows with the table and takes CPU from the worker on a small machine.
                # Only the new rows are wanted: the primary key's range.
                connection.execute(sa.text("SET enable_seqscan = off"))
                self.backend_pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
                connection.commit()
            self._ready.set()
            while not self._stop.is_set():
                rows = connection.execute(
                    sa.select(_accruals.c.id, _accruals.c.usage_id)
                    .where(_accruals.c.id > self._last_id)
                    .order_by(_accruals.c.id)
                ).all()
                connection.rollback()  # a fresh snapshot for the next poll
                now = time.time()
                for row_id, usage_id in rows:
                    self.seen.setdefault(usage_id, now)
                    self._last_id = max(self._last_id, row_id)
                time.sleep(POLL_S)

    def wait(self, count: int, timeout_s: float, process: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.seen)} of {count} accruals after {timeout_s}s")
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the worker exited with {process.returncode}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int | None) -> float:
    """CPU seconds (user + system) used so far by process `root` and its descendants, the
    exited ones its processes have reaped included; 0 without `/proc`."""
    if root is None:
        return 0.0
    children: dict[int, list[int]] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total * _TICK_S


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ceiling(servers: str, topic: str, n: int, group: str, max_records: int) -> dict[str, Any]:
    """A plain aiokafka consume-and-commit loop over the backlog: the Kafka client's rate."""
    from aiokafka import AIOKafkaConsumer

    async def run() -> dict[str, Any]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=servers.split(","),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            started = time.monotonic()
            consumed, first = 0, None
            while consumed < n:
                batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
                got = sum(len(records) for records in batch.values())
                if got and first is None:
                    first = time.monotonic()
                consumed += got
                if got:
                    await consumer.commit()
            last = time.monotonic()
        finally:
            await consumer.stop()
        return rate(consumed, started, first or started, last)

    return asyncio.run(run())


def rate(n: int, started: float, first: float, last: float) -> dict[str, Any]:
    return {
        "events": n,
        "seconds": last - first,
        "seconds_from_start": last - started,
        "events_per_s": n / (last - first) if last > first else None,
    }


def paced_produce(
    servers: str, topic: str, messages: list[bytes], per_s: float, models: list[bytes]
) -> dict[str, float]:
    """Produce `messages` at `per_s`; when each was handed over, by usage id (wall clock)."""
    producer = KafkaProducer(bootstrap_servers=servers.split(","), acks="all", linger_ms=2)
    sent: dict[str, float] = {}
    started = time.monotonic()
    try:
        for i, message in enumerate(messages):
            due = started + i / per_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[json.loads(message)["id"]] = time.time()
            producer.send(topic, key=models[i], value=message)
        producer.flush(timeout=60)
    finally:
        producer.close()
    return sent


def bench_worker(
    engine_name: str,
    command: list[str],
    url: str,
    n: int,
    latency_messages: list[bytes],
    latency_rate: float | None,
    servers: str,
    usage_topic: str,
    work: Path,
    services: dict[str, int | None],
) -> dict[str, Any]:
    """Drain the backlog of `n` with one worker process, then measure latency at a paced load
    (`latency_rate`, by default: half the rate it drained the backlog at).

    Also the CPU time per event of the worker and of each of `services` (name: root pid)
    while it drained: unlike the rate, it hardly moves with what else the machine runs."""
    watch = CommitWatch(url).start()
    log_file = (work / f"{engine_name}.log").open("ab")
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        watch.wait(1, 300, process)
        first = time.monotonic()
        roots = {"worker": process.pid, **services, "watcher": watch.backend_pid}
        cpu_first = {name: tree_cpu_s(pid) for name, pid in roots.items()}
        watch.wait(n, 1_800, process)
        result = rate(n, started, first, time.monotonic())
        cpu = {name: (tree_cpu_s(pid) - cpu_first[name]) / n * 1e6 for name, pid in roots.items()}
        # The server's figure without the benchmark's own polling (reported on its own).
        cpu["postgres"] = cpu.get("postgres", 0.0) - cpu["watcher"]
        result["cpu_us_per_event"] = cpu
        if latency_rate is None:  # half the sustained rate: a load it keeps up with
            latency_rate = max(1.0, (result["events_per_s"] or 2.0) / 2)
        models = [str(json.loads(m)["data"]["model_id"]).encode() for m in latency_messages]
        sent = paced_produce(servers, usage_topic, latency_messages, latency_rate, models)
        watch.wait(n + len(latency_messages), 600, process)
        latencies = [watch.seen[usage_id] - at for usage_id, at in sent.items()]
        tenth = max(1, len(latencies) // 10)
        result["latency"] = {
            "events": len(latencies),
            "offered_events_per_s": latency_rate,
            "p50_s": percentile(latencies, 0.50),
            "p90_s": percentile(latencies, 0.90),
            "p99_s": percentile(latencies, 0.99),
            "max_s": max(latencies),
            "p99_s_by_tenth": [
                percentile(latencies[i : i + tenth], 0.99) for i in range(0, len(latencies), tenth)
            ],
        }
        return result
    finally:
        watch.stop()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def bench_embedded(
    url: str, chain_id: int, ring: KeyRing, clock: EpochClock, messages: list[bytes], batch: int
) -> dict[str, Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        runner = EmbeddedJoinRunner(engine, chain_id, ring, clock, batch_size=batch)
        started = time.monotonic()
        results = runner.process(numbered(messages))
        done = time.monotonic()
        accrued = sum(r.accrued for r in results)
        if accrued != len(messages):
            raise RuntimeError(f"embedded runner accrued {accrued} of {len(messages)}")
        return rate(len(messages), started, started, done)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency-events", type=int, default=None, help="default: events / 5")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="default: half the ceiling's rate, at most 5,000/s",
    )
    parser.add_argument("--algorithm", choices=["ed25519", "hmac-sha256"], default="ed25519")
    parser.add_argument("--batch", type=int, default=2_000, help="max records per batch")
    parser.add_argument(
        "--engines", default="kafka-python,faust,embedded-postgresql,embedded-sqlite"
    )
    parser.add_argument("--output", type=Path, default=None, help=f"default: {RESULTS}")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the workers here")
    args = parser.parse_args()
    output = args.output or (RESULTS if args.events >= 20_000 else None)
    n = args.events
    m = args.latency_events if args.latency_events is not None else max(1, n // 5)
    engines = [e for e in args.engines.split(",") if e]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    anvil = Anvil(work / "anvil").start()
    postgres = Postgres(work / "postgres", durable=True).start()
    broker = KafkaBroker(work / "kafka").start()
    results: dict[str, dict[str, Any]] = {}
    try:
        actors = dev_actors()
        system = deploy_test_system(connect_fast(anvil.rpc_url), actors)
        chain = ChainHarness(anvil, system.royalty_policy.client, actors)
        genesis, licenses = script_chain(chain, system)
        workers = [e for e in ("kafka-python", "faust") if e in engines]
        t0 = time.monotonic()
        total = n + m * len(workers)
        ring, messages = usage_events(total, genesis, licenses, args.algorithm, "bench")
        sign_s = (time.monotonic() - t0) / total
        backlog = messages[:n]
        paced = {w: messages[n + i * m : n + (i + 1) * m] for i, w in enumerate(workers)}
        servers, topics = broker.bootstrap_servers, Topics.unique()
        chain_id = system.manifest.chain_id
        clock = EpochClock(EPOCH_S, genesis)
        urls = {
            name: f"sqlite:///{work / 'embedded.db'}"
            if name == "embedded-sqlite"
            else postgres.create_database(name.replace("-", "_"))
            for name in engines
        }
        for name in engines:
            migrate.upgrade(urls[name])
        # The chain goes into the `chain` topic once (indexed into the first database), and
        # is indexed into each embedded runner's database.
        index_into_topic(system, chain, urls[engines[0]], servers, topics.chain)
        for name in (e for e in engines[1:] if e.startswith("embedded")):
            follower = make_follower(system, [anvil.rpc_url], urls[name], confirmations=0)
            try:
                index_to_head(follower)
            finally:
                follower.release_lease()
                follower.engine.dispose()
        produce_usage(servers, topics.usage, backlog)

        results["ceiling"] = ceiling(
            servers, topics.usage, n, f"{topics.group}-ceiling", args.batch
        )

        ring_file = work / "keyring.json"
        write_json_atomic(ring_file, ring.to_json())
        drained = n
        for engine_name in workers:
            module = "stream.app" if engine_name == "kafka-python" else "stream.faust_app"
            profile = [] if args.profile is None else [
                "-m", "cProfile", "-o", str(args.profile / f"{engine_name}.prof"),
            ]  # fmt: skip
            command = [
                sys.executable, *profile, "-m", module,
                "--bootstrap-servers", servers, "--db-url", urls[engine_name],
                "--chain-id", str(chain_id), "--key-ring", str(ring_file),
                "--epoch-length", str(EPOCH_S), "--epoch-genesis", str(genesis),
                "--usage-topic", topics.usage, "--chain-topic", topics.chain,
                "--accruals-topic", topics.accruals, "--dead-letter-topic", topics.dead_letter,
                "--group-id", f"{topics.group}-{engine_name}", "--component", topics.component,
                "--max-records", str(args.batch),
            ]  # fmt: skip
            # A later worker drains the earlier workers' paced events with the backlog.
            results[engine_name] = bench_worker(
                engine_name,
                command,
                urls[engine_name],
                drained,
                paced[engine_name],
                args.latency_rate,
                servers,
                topics.usage,
                work,
                {"postgres": postgres.pid, "kafka": broker.pid},
            )
            results[engine_name]["events"] = drained
            drained += m
        for name in ("embedded-postgresql", "embedded-sqlite"):
            if name in engines:
                results[name] = bench_embedded(
                    urls[name], chain_id, ring, clock, backlog, args.batch
                )
    finally:
        broker.stop()
        postgres.stop()
        anvil.stop()
    write_results(args, results, output, sign_s, m)


def write_results(
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    output: Path | None,
    sign_s: float,
    m: int,
) -> None:
    ceiling_rate = results["ceiling"]["events_per_s"]
    signed = {"ed25519": "Ed25519", "hmac-sha256": "HMAC-SHA256"}[args.algorithm]
    figures: list[dict[str, Any]] = [
        {
            "figure": "ceiling: aiokafka consume-and-commit loop",
            "value": ceiling_rate,
            "unit": "events/s",
            "baseline": None,
            "baseline_name": "",
            "target": "reference",
            "met": None,
        }
    ]
    for name in ("kafka-python", "faust"):
        if name not in results:
            continue
        r = results[name]
        value = r["events_per_s"]
        target = max(TARGET_EVENTS_PER_S, TARGET_SHARE_OF_CEILING * ceiling_rate)
        figures.append(
            {
                "figure": f"stream join, one {name} worker, sustained ({signed})",
                "value": value,
                "unit": "events/s",
                "baseline": ceiling_rate,
                "baseline_name": "aiokafka consume-and-commit ceiling",
                "target": f">= {TARGET_EVENTS_PER_S} events/s and >= half the ceiling",
                "met": value is not None and value >= target,
            }
        )
        cpu = r.get("cpu_us_per_event")
        if cpu:
            figures.append(
                {
                    "figure": f"stream join, one {name} worker ({signed}), CPU per event drained:"
                    f" the worker (PostgreSQL {cpu['postgres']:.0f} us, Kafka {cpu['kafka']:.0f}"
                    f" us; the benchmark's commit watcher {cpu['watcher']:.0f} us)",
                    "value": cpu["worker"],
                    "unit": "us",
                    "baseline": None,
                    "baseline_name": "",
                    "target": "reference: 2 cores give at most 200 us of CPU per event at "
                    f"{TARGET_EVENTS_PER_S} events/s",
                    "met": None,
                }
            )
        latency = r.get("latency")
        if latency:
            figures.append(
                {
                    "figure": f"stream join, one {name} worker ({signed}), produce-to-accrual p99 "
                    f"at {latency['offered_events_per_s']:.0f} events/s",
                    "value": latency["p99_s"],
                    "unit": "s",
                    "baseline": latency["p50_s"],
                    "baseline_name": "p50",
                    "target": f"< {TARGET_P99_S} s",
                    "met": latency["p99_s"] < TARGET_P99_S,
                }
            )
    for name in ("embedded-postgresql", "embedded-sqlite"):
        if name in results:
            figures.append(
                {
                    "figure": f"stream join, {name.replace('-', ' runner, ')} ({signed})",
                    "value": results[name]["events_per_s"],
                    "unit": "events/s",
                    "baseline": ceiling_rate,
                    "baseline_name": "aiokafka consume-and-commit ceiling",
                    "target": "no Kafka: the join and the database alone",
                    "met": None,
                }
            )
    doc = {
        "what": f"stream join of {args.events} signed usage events, one worker, by engine",
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0],
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        },
        "setup": {
            "events": args.events,
            "latency_events": m,
            "algorithm": args.algorithm,
            "ed25519_backend": default_backend().name,
            "signing_s_per_event": sign_s,
            "batch": args.batch,
            "models": len(MODELS),
            "licenses": len(MODELS) * LICENSES_PER_MODEL,
            "usage_partitions": 3,
            "postgres": "local cluster, durable defaults (fsync on, synchronous_commit on)",
            "rate": "events / (last commit - first commit); seconds_from_start adds startup",
            "latency": "accrual row first seen committed (10 ms polls) - handed to the producer",
            "cpu_us_per_event": "CPU time (user + system) of the worker, and of the PostgreSQL "
            "and Kafka servers, while the worker drained the backlog, per event drained; the "
            "PostgreSQL figure leaves out the server process of the benchmark's commit watcher "
            "(`watcher`, its polls by primary key)",
        },
        "figures": figures,
        "results": results,
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(doc, indent=2) + "\n")
    verifier = f", {default_backend().name} Ed25519" if args.algorithm == "ed25519" else ""
    print(f"{args.events} events ({args.algorithm}{verifier}), batches of {args.batch}:")
    print(
        f"{'engine':<22}{'seconds':>10}{'from start':>12}{'events/s':>12}{'p50 s':>9}{'p99 s':>9}"
        "   CPU us/event: worker, postgres, kafka (watcher)"
    )
    for name, r in results.items():
        latency = r.get("latency") or {}
        p50 = f"{latency['p50_s']:>9.3f}" if latency else f"{'':>9}"
        p99 = f"{latency['p99_s']:>9.3f}" if latency else f"{'':>9}"
        cpu = r.get("cpu_us_per_event")
        print(
            f"{name:<22}{r['seconds']:>10.2f}{r['seconds_from_start']:>12.2f}"
            f"{r['events_per_s'] or 0:>12.0f}{p50}{p99}"
            + (
                f"   {cpu['worker']:.0f}, {cpu['postgres']:.0f}, {cpu['kafka']:.0f}"
                f" ({cpu['watcher']:.0f})"
                if cpu
                else ""
            )
        )


if __name__ == "__main__":
    main()
