"""Benchmark: inference direct to Triton vs through the metering gateway, and the producer.

In one run, on loopback: a local Kafka broker and Triton server (deploy.local) start; the same
load (fixed request count, bounded concurrency, async aiohttp client, `echo-lm` billed by
tokens) is sent straight to Triton and through the gateway (a separate process, as deployed),
in interleaved rounds so that background load on the machine hits both alike. The same again
over KServe v2 gRPC (a `grpc.aio` client sending one pre-encoded ModelInferRequest), direct to
Triton's gRPC port and through the gateway's (Kafka delivery). Also through
`bench/passthrough_proxy.py`, the gateway's HTTP stack forwarding to Triton with no metering at
all: the floor of one extra hop on this machine, so that the gateway's distance from direct
splits into what the hop costs and what metering costs. Reported per target and concurrency:
throughput, p50 and p99 latency, and the ratios to direct (gRPC against direct gRPC); for the
gateways also the mean time a usage event took to become durable (their
`royalty_metering_durable_seconds`: Kafka's ack, or the spool's fsync).

Then the durable producer alone: pre-built signed events submitted as fast as possible until
Kafka (or the spool, in write-ahead mode) has made every one durable, against raw kafka-python
sends with the same settings as the baseline. Submitted one call per event: from the event
loop with `publish`, as the gateway does (1,000 calls awaited at a time), and from a thread
with `submit`; and in batches of 1,000 with one future each, as the HTTP ingest does. Also a
full spool drained into Kafka (catching up after an outage), and the event build+sign rate.

    .venv/bin/python bench/metering_bench.py [--requests 3000] [--concurrency 1 16] [--rounds 3]
    .venv/bin/python bench/metering_bench.py --producer-only   # Kafka only, no Triton

A change to the gateway is compared with an earlier version in the same run by adding the
gateways of another checkout (`git worktree add /tmp/before <rev>`, with its
`metering/native/target` linked from this one) as targets `gateway_<delivery>@before`:

    .venv/bin/python bench/metering_bench.py --checkout before=/tmp/before \
        --rounds 4 --requests 1500 --output /tmp/metering-ab.json

Every process shares the same cores (the client too: the same aiohttp client and concurrency
for every target), so each round also records the CPU seconds per request spent by the client,
Triton (with its Python backend stubs), the gateways (with the pass-through proxy; idle ones
cost next to nothing) and the Kafka broker: where the cores went.

Prints a table and writes bench/results/metering.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import wait
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
from kafka import KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402

from deploy.local import KafkaBroker, TritonServer  # noqa: E402
from deploy.local.process import free_port  # noqa: E402
from metering.auth import issue_key  # noqa: E402
from metering.billing import ModelBilling  # noqa: E402
from metering.durable import DurableProducer  # noqa: E402
from metering.events import Usage, UsageEventFactory  # noqa: E402
from metering.kafka_usage_publisher import KafkaPublisherConfig, KafkaUsagePublisher  # noqa: E402
from metering.keyfiles import save_api_key_records, write_json_atomic  # noqa: E402
from metering.signing import KeyRing, Signer, SigningKey  # noqa: E402
from metering.spool import FileSpool  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from passthrough_proxy import start as start_passthrough  # noqa: E402

RESULTS = REPO / "bench" / "results" / "metering.json"
PRODUCER_RESULTS = REPO / "bench" / "results" / "metering-producer.json"
TARGETS = {"throughput_ratio_min": 0.8, "added_p50_ms_max": 2.0, "producer_per_s_min": 20_000}
INGEST_BATCH = 1000  # events per call in the batched producer runs: the ingest API's limit
PUBLISH_WINDOW = 1000  # `publish` calls in flight at once in the gateway-path producer run
PEPPER = "bench-pepper"
BODY = json.dumps(
    {
        "inputs": [
            {
                "name": "prompt",
                "shape": [1, 1],
                "datatype": "BYTES",
                "data": ["the quick brown fox jumps over the lazy dog"],
            }
        ]
    }
).encode()


_PROMPT = json.loads(BODY)["inputs"][0]["data"][0].encode()
GRPC_REQUEST = pb.ModelInferRequest(
    model_name="echo-lm",
    inputs=[pb.ModelInferRequest.InferInputTensor(name="prompt", datatype="BYTES", shape=[1, 1])],
    raw_input_contents=[struct.pack("<I", len(_PROMPT)) + _PROMPT],
).SerializeToString()

_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (Triton's backend stubs, Kafka's JVM)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of `pids` so far (0 for those gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def closed_loop(
    one: Callable[[], Awaitable[bool]], requests: int, concurrency: int
) -> dict[str, Any]:
    """`requests` calls of `one` (True: answered OK) with at most `concurrency` in flight,
    after up to 50 warm-up calls; throughput and latencies."""
    for _ in range(min(50, requests)):  # warm connections and caches
        await one()
    latencies: list[float] = []
    failures = 0
    todo = iter(range(requests))

    async def worker() -> None:
        nonlocal failures
        for _ in todo:
            started = time.perf_counter()
            if not await one():
                failures += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "failures": failures,
        "rps": requests / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def load(
    url: str, headers: dict[str, str], requests: int, concurrency: int
) -> dict[str, Any]:
    """`closed_loop` of KServe v2 HTTP POSTs of the same body."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> bool:
            async with session.post(url, data=BODY, headers=headers) as r:
                await r.read()
                return r.status == 200

        return await closed_loop(one, requests, concurrency)


async def load_grpc(
    address: str, headers: dict[str, str], requests: int, concurrency: int
) -> dict[str, Any]:
    """`closed_loop` over KServe v2 gRPC: the same prompt as one pre-encoded ModelInferRequest,
    sent as bytes on one channel (HTTP/2 multiplexes the calls)."""
    metadata = tuple(headers.items())
    async with grpc.aio.insecure_channel(address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def one() -> bool:
            try:
                await infer(GRPC_REQUEST, metadata=metadata)
            except grpc.aio.AioRpcError:
                return False
            return True

        return await closed_loop(one, requests, concurrency)


def setup_node(
    root: Path, bootstrap: str, topic: str, triton: TritonServer, delivery: str
) -> tuple[dict[str, str], str]:
    """Files and environment of a gateway process; returns (env, api key). Which code it runs
    is `start_gateway`'s to say."""
    meta = root / "metering"
    key = SigningKey.generate(prefix="bench")
    write_json_atomic(meta / "signing-key.json", key.to_json())
    write_json_atomic(meta / "keyring.json", KeyRing([key.verification_key()]).to_json())
    plain, record = issue_key(PEPPER.encode(), 1, 1, "bench")
    save_api_key_records(meta / "api-keys.json", [record])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROYALTY_")}
    env.update(
        {
            "ROYALTY_DATA_DIR": str(root),
            "ROYALTY_LOG_LEVEL": "warning",
            "ROYALTY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ROYALTY_KAFKA_USAGE_TOPIC": topic,
            "ROYALTY_TRITON_HTTP_URL": triton.http_url,
            "ROYALTY_TRITON_GRPC_URL": triton.grpc_url,
            "ROYALTY_METERING_API_KEY_PEPPER": PEPPER,
            "ROYALTY_METERING_DELIVERY": delivery,
            "ROYALTY_METERING_MODELS": json.dumps(
                {"echo-lm": {"model_id": "1", "metric": "tokens", "units_output": "tokens"}}
            ),
        }
    )
    return env, plain


def start_gateway(
    env: dict[str, str],
    port: int,
    log: Path,
    grpc_port: int | None = None,
    checkout: Path = REPO,
) -> subprocess.Popen[bytes]:
    """A gateway process running `checkout`'s code, ready to serve (gRPC too, on
    `grpc_port`)."""
    env = {**env, "ROYALTY_METERING_PORT": str(port), "PYTHONPATH": str(checkout)}
    if grpc_port is not None:
        env["ROYALTY_METERING_GRPC_PORT"] = str(grpc_port)
    with log.open("ab") as out:
        # `-m` puts the working directory first on the path: the checkout's own code runs.
        proc = subprocess.Popen(
            [sys.executable, "-m", "metering.server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=checkout,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
                time.sleep(1.0)  # let the producer's startup probe go straight to Kafka
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"gateway did not start: {log.read_text()[-2000:]}")


def durable_seconds(port: int) -> tuple[float, float]:
    """The `royalty_metering_durable_seconds` so far of the gateway on `port`: (seconds,
    events), all deliveries."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    seconds = events = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "royalty_metering_durable_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    seconds += sample.value
                elif sample.name.endswith("_count"):
                    events += sample.value
    return seconds, events


def make_topic(bootstrap: str, name: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    admin.close()
    return name


async def _publish_all(
    producer: DurableProducer, records: list[tuple[bytes, bytes]], window: int
) -> set[str]:
    """`publish` every record, `window` calls awaited together; where they went."""
    deliveries: set[str] = set()
    for i in range(0, len(records), window):
        chunk = records[i : i + window]
        deliveries.update(await asyncio.gather(*(producer.publish(k, v) for k, v in chunk)))
    return deliveries


def bench_producer(bootstrap: str, root: Path, events: int) -> dict[str, Any]:
    """Events/s of the durable producer (both modes) against raw kafka-python sends."""
    signer = Signer(SigningKey.generate(prefix="bench"))
    factory = UsageEventFactory("bench", signer)
    billing = ModelBilling("echo-lm", 1, "tokens", "tokens")
    started = time.perf_counter()
    encoded = [
        factory.encode(Usage(billing, 1 + i % 50, 1 + i % 100, datetime.now(UTC)))
        for i in range(events)
    ]
    build_rate = events / (time.perf_counter() - started)

    out: dict[str, Any] = {"events": events, "build_and_sign_per_s": build_rate}
    topic = make_topic(bootstrap, "bench-raw")
    raw = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=0,
        batch_size=256 * 1024,
    )
    raw.send(topic, key=b"1", value=b"warm").get(30)
    started = time.perf_counter()
    futures = [raw.send(topic, key=e.key, value=e.value) for e in encoded]
    raw.flush()
    assert all(f.succeeded() for f in futures)
    out["raw_kafka_python_per_s"] = events / (time.perf_counter() - started)
    raw.close()

    records = [(e.key, e.value) for e in encoded]
    for mode, shape in product(("kafka", "spool"), ("", "_batched")):
        topic = make_topic(bootstrap, f"bench-{mode}{shape}")
        publisher = KafkaUsagePublisher(
            KafkaPublisherConfig(bootstrap, topic, create_topic=False, delivery_timeout_ms=30_000)
        )
        spool = FileSpool(root / f"spool-{mode}{shape}", max_bytes=1 << 30, segment_bytes=64 << 20)
        producer = DurableProducer(
            publisher, spool, write_ahead=mode == "spool", delivery_timeout_s=30
        ).start()
        deadline = time.monotonic() + 30
        while producer.spooling and mode == "kafka" and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.perf_counter()
        if shape:
            # As the HTTP ingest hands them over: one call (one future) per batch.
            groups = [
                producer.submit_many(records[i : i + INGEST_BATCH])
                for i in range(0, events, INGEST_BATCH)
            ]
            wait(groups)
            deliveries = {d for g in groups for d in g.result()}
        else:
            # As the gateway hands them over: one call (one future) per event.
            futures = [producer.submit(key, value) for key, value in records]
            wait(futures)
            deliveries = {f.result() for f in futures}
        durable = time.perf_counter() - started
        producer.wait_drained(120)
        in_kafka = time.perf_counter() - started
        producer.close()
        out[f"durable_{mode}{shape}_per_s"] = events / durable
        out[f"durable_{mode}{shape}_into_kafka_per_s"] = events / in_kafka
        out[f"durable_{mode}{shape}_deliveries"] = sorted(deliveries)

    # As the gateway hands them over: `publish` from the event loop, 1,000 calls in flight.
    topic = make_topic(bootstrap, "bench-publish")
    publisher = KafkaUsagePublisher(
        KafkaPublisherConfig(bootstrap, topic, create_topic=False, delivery_timeout_ms=30_000)
    )
    spool = FileSpool(root / "spool-publish", max_bytes=1 << 30, segment_bytes=64 << 20)
    producer = DurableProducer(publisher, spool, write_ahead=False, delivery_timeout_s=30).start()
    deadline = time.monotonic() + 30
    while producer.spooling and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.perf_counter()
    deliveries = asyncio.run(_publish_all(producer, records, PUBLISH_WINDOW))
    out["durable_kafka_publish_per_s"] = events / (time.perf_counter() - started)
    out["durable_kafka_publish_deliveries"] = sorted(deliveries)
    producer.wait_drained(120)
    producer.close()

    # Catching up after an outage: a spool already holding every event, drained into Kafka.
    topic = make_topic(bootstrap, "bench-replay")
    spool = FileSpool(root / "spool-replay", max_bytes=1 << 30, segment_bytes=64 << 20)
    for i in range(0, events, 1000):
        spool.append([(e.key, e.value) for e in encoded[i : i + 1000]])
    publisher = KafkaUsagePublisher(
        KafkaPublisherConfig(bootstrap, topic, create_topic=False, delivery_timeout_ms=30_000)
    )
    publisher.probe()
    started = time.perf_counter()
    producer = DurableProducer(publisher, spool, write_ahead=True, delivery_timeout_s=30).start()
    producer.wait_drained(300)
    out["spool_replay_into_kafka_per_s"] = events / (time.perf_counter() - started)
    producer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also run the gateway (both deliveries) from another checkout of this repository, "
        "as targets gateway_<delivery>@NAME alternated with the others on the same Kafka and "
        "Triton: a before/after comparison of a gateway change (the checkout needs its native "
        "library built or linked at metering/native/target)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"where to write (default {RESULTS.name})"
    )
    parser.add_argument(
        "--producer-only",
        action="store_true",
        help=f"only the producer (Kafka, no Triton); writes {PRODUCER_RESULTS.name}",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="metering-bench-"))
    if args.producer_only:
        kafka = KafkaBroker(root / "kafka").start()
        try:
            producer = bench_producer(kafka.bootstrap_servers, root, args.events)
        finally:
            kafka.stop()
        only = {"machine": machine(), "producer": producer, "targets": TARGETS}
        PRODUCER_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        PRODUCER_RESULTS.write_text(json.dumps(only, indent=2) + "\n")
        print_producer(producer)
        print(f"\nwrote {PRODUCER_RESULTS.relative_to(REPO)}")
        return
    kafka = KafkaBroker(root / "kafka").start()
    triton = TritonServer(root / "triton").start()
    gateways: list[subprocess.Popen[bytes]] = []
    try:
        # HTTP targets by URL; gRPC ones (names ending in `_grpc`) by address.
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "direct": (f"http://{triton.http_url}/v2/models/echo-lm/infer", {}),
            "direct_grpc": (triton.grpc_url, {}),
        }
        checkouts = [("", REPO)] + [
            (name, Path(path).resolve())
            for name, _, path in (spec.partition("=") for spec in args.checkout)
        ]
        metrics: dict[str, int] = {}  # gateway targets: the HTTP port of their /metrics
        for (label, checkout), delivery in product(checkouts, ("kafka", "spool")):
            suffix = f"@{label}" if label else ""
            node = f"{delivery}-{label}" if label else delivery
            topic = make_topic(kafka.bootstrap_servers, f"usage-{node}")
            env, key = setup_node(
                root / f"node-{node}", kafka.bootstrap_servers, topic, triton, delivery
            )
            port = free_port()
            grpc_port = free_port() if delivery == "kafka" and not label else None
            gateways.append(
                start_gateway(env, port, root / f"gateway-{node}.log", grpc_port, checkout)
            )
            targets[f"gateway_{delivery}{suffix}"] = (
                f"http://127.0.0.1:{port}/v2/models/echo-lm/infer",
                {"x-api-key": key},
            )
            metrics[f"gateway_{delivery}{suffix}"] = port
            if grpc_port is not None:
                targets[f"gateway_{delivery}_grpc"] = (f"127.0.0.1:{grpc_port}", {"x-api-key": key})
                metrics[f"gateway_{delivery}_grpc"] = port
        # The floor: one hop through the gateway's HTTP stack with no metering at all.
        port = free_port()
        gateways.append(start_passthrough(triton.http_url, port, root / "passthrough.log"))
        targets["passthrough"] = (f"http://127.0.0.1:{port}/v2/models/echo-lm/infer", {})
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {t: {} for t in targets}
        triton_pid = triton._process.pid if triton._process is not None else None
        kafka_pid = kafka._process.pid if kafka._process is not None else None
        trees = {
            "triton": process_tree(triton_pid) if triton_pid is not None else [],
            "gateway": [p.pid for p in gateways],
            "kafka": process_tree(kafka_pid) if kafka_pid is not None else [],
        }
        for concurrency in args.concurrency:
            count = args.requests if concurrency > 1 else max(500, args.requests // 3)
            for _ in range(args.rounds):
                for name, (url, headers) in targets.items():
                    before = {k: cpu_seconds(v) for k, v in trees.items()}
                    client_before = os.times()
                    run = load_grpc if name.endswith("_grpc") else load
                    durable_before = durable_seconds(metrics[name]) if name in metrics else None
                    result = asyncio.run(run(url, headers, count, concurrency))
                    if durable_before is not None:
                        durable_after = durable_seconds(metrics[name])
                        events = durable_after[1] - durable_before[1]
                        spent_s = durable_after[0] - durable_before[0]
                        result["durable_ms_mean"] = spent_s / events * 1000 if events else None
                    client_after = os.times()
                    sent = count + min(50, count)  # with the warm-up requests
                    spent = {k: cpu_seconds(v) - before[k] for k, v in trees.items()}
                    spent["client"] = (client_after.user + client_after.system) - (
                        client_before.user + client_before.system
                    )
                    result["cpu_us_per_request"] = {
                        k: round(v / sent * 1e6) for k, v in sorted(spent.items())
                    }
                    runs[name].setdefault(concurrency, []).append(result)
        summary: dict[str, Any] = {}
        for name, by_c in runs.items():
            for concurrency, results in by_c.items():
                summary.setdefault(name, {})[str(concurrency)] = {
                    "rps": statistics.median(r["rps"] for r in results),
                    "p50_ms": statistics.median(r["p50_ms"] for r in results),
                    "p99_ms": statistics.median(r["p99_ms"] for r in results),
                    "failures": sum(r["failures"] for r in results),
                    "cpu_us_per_request": {
                        k: statistics.median(r["cpu_us_per_request"][k] for r in results)
                        for k in results[0]["cpu_us_per_request"]
                    },
                    **(
                        {
                            "durable_ms_mean": statistics.median(
                                r["durable_ms_mean"] for r in results
                            )
                        }
                        if name in metrics
                        else {}
                    ),
                    "rounds": results,
                }
        ratios: dict[str, Any] = {}
        for name in targets:
            if name.startswith("direct"):
                continue
            base = "direct_grpc" if name.endswith("_grpc") else "direct"
            for c in map(str, args.concurrency):
                g, d = summary[name][c], summary[base][c]
                ratios.setdefault(name, {})[c] = {
                    "throughput_ratio": g["rps"] / d["rps"],
                    "added_p50_ms": g["p50_ms"] - d["p50_ms"],
                    "added_p99_ms": g["p99_ms"] - d["p99_ms"],
                }
        for proc in gateways:
            proc.terminate()
            proc.wait(30)
        gateways.clear()
        producer = bench_producer(kafka.bootstrap_servers, root, args.events)
    finally:
        for proc in gateways:
            proc.kill()
        triton.stop()
        kafka.stop()

    result = {
        "machine": machine(),
        "model": "echo-lm (tokens)",
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "inference": summary,
        "gateway_vs_direct": ratios,
        "producer": producer,
        "targets": TARGETS,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    columns = ("req/s", "p50 ms", "p99 ms", "ratio", "+p50 ms", "durable ms")
    cpu_columns = ("client", "triton", "gateway", "kafka")
    print(
        f"{'target':<16}{'conc':>5}"
        + "".join(f"{c:>10}" for c in columns[:-1])
        + f"{columns[-1]:>12}"
        + "   CPU us/req: "
        + " ".join(f"{c:>7}" for c in cpu_columns)
    )
    for name, by_c in summary.items():
        for c, s in by_c.items():
            r = ratios.get(name, {}).get(c)
            extra = f"{r['throughput_ratio']:>10.2f}{r['added_p50_ms']:>10.2f}" if r else " " * 20
            durable = s.get("durable_ms_mean")
            extra += f"{durable:>12.2f}" if durable is not None else " " * 12
            cpu = " ".join(f"{s['cpu_us_per_request'][k]:>7.0f}" for k in cpu_columns)
            print(
                f"{name:<16}{c:>5}{s['rps']:>10.0f}{s['p50_ms']:>10.2f}{s['p99_ms']:>10.2f}{extra}"
                f"{'':>14}{cpu}"
            )
    print()
    print_producer(producer)
    print(f"\nwrote {args.output}")


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_end": os.getloadavg(),
    }


def print_producer(producer: dict[str, Any]) -> None:
    """The producer's table: events/s of each way of making events durable."""
    for k in (
        "build_and_sign_per_s",
        "raw_kafka_python_per_s",
        "durable_kafka_publish_per_s",
        "durable_kafka_per_s",
        "durable_kafka_into_kafka_per_s",
        "durable_kafka_batched_per_s",
        "durable_kafka_batched_into_kafka_per_s",
        "durable_spool_per_s",
        "durable_spool_into_kafka_per_s",
        "durable_spool_batched_per_s",
        "durable_spool_batched_into_kafka_per_s",
        "spool_replay_into_kafka_per_s",
    ):
        if k in producer:  # (results saved before a figure existed lack it)
            print(f"{k:<40}{producer[k]:>12,.0f} events/s")


if __name__ == "__main__":
    main()
