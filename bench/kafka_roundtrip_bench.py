"""Benchmark: one usage event's produce-and-acknowledge round trip, the wait the metering
gateway adds to every inference (`delivery = kafka`).

Against one local broker, in the same run and alternated `--rounds` times, each client sends
one 600-byte record and waits for its acknowledgement (`acks=all`, idempotent), `--trips`
times in a row:

- `kafka-python, ours`: the producer options of the usage publisher (`LEAN_CLIENT`: no
  client-side metrics), what the gateway's durable producer uses;
- `kafka-python, defaults`: the same without `LEAN_CLIENT` (the baseline);
- `aiokafka`: `send_and_wait` on an asyncio loop, for reference (not a client the gateway uses).

Reports the p50 and p99 of the round trip and the process's CPU time per round trip (all its
threads: kafka-python sends from its own). The CPU figure moves far less than the wall time
with what else the machine runs.

    .venv/bin/python bench/kafka_roundtrip_bench.py [--trips 3000] [--rounds 2]

Prints a table and writes bench/results/kafka-roundtrip.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.alternated import Client, cpu_seconds, run_rounds, save  # noqa: E402
from metering.kafka_usage_publisher import LEAN_CLIENT  # noqa: E402

RESULTS = REPO / "bench" / "results" / "kafka-roundtrip.json"
VALUE = b"x" * 600


def _summary(waits: list[float], cpu_s: float) -> dict[str, float]:
    waits = sorted(waits)
    return {
        "trips": len(waits),
        "p50_ms": waits[len(waits) // 2] * 1e3,
        "p99_ms": waits[min(len(waits) - 1, len(waits) * 99 // 100)] * 1e3,
        "cpu_us_per_trip": cpu_s / len(waits) * 1e6,
    }


def kafka_python(servers: str, topic: str, trips: int, lean: bool) -> dict[str, float]:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        **(LEAN_CLIENT if lean else {}),
    )
    try:
        producer.send(topic, key=b"1", value=b"warm", partition=0).get(30)
        waits = []
        cpu = cpu_seconds()
        for _ in range(trips):
            started = time.perf_counter()
            producer.send(topic, key=b"1", value=VALUE, partition=0).get(30)
            waits.append(time.perf_counter() - started)
        return _summary(waits, cpu_seconds() - cpu)
    finally:
        producer.close()


def aiokafka(servers: str, topic: str, trips: int) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer

    async def run() -> dict[str, float]:
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(topic, key=b"1", value=b"warm", partition=0)
            waits = []
            cpu = cpu_seconds()
            for _ in range(trips):
                started = time.perf_counter()
                await producer.send_and_wait(topic, key=b"1", value=VALUE, partition=0)
                waits.append(time.perf_counter() - started)
            return _summary(waits, cpu_seconds() - cpu)
        finally:
            await producer.stop()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    clients: dict[str, Client] = {
        "kafka-python, ours": lambda s, t: kafka_python(s, t, args.trips, lean=True),
        "kafka-python, defaults": lambda s, t: kafka_python(s, t, args.trips, lean=False),
        "aiokafka": lambda s, t: aiokafka(s, t, args.trips),
    }
    results = run_rounds(clients, args.rounds, partitions=1, prefix="roundtrip")
    ours, defaults = results["kafka-python, ours"], results["kafka-python, defaults"]
    figures = [
        {
            "figure": "one event's produce round trip (p50), kafka-python as the gateway uses it",
            "value": round(ours["p50_ms"], 3),
            "unit": "ms",
            "baseline": round(defaults["p50_ms"], 3),
            "baseline_name": "kafka-python with its defaults",
            "target": "reference: the gateway waits for one per inference",
        },
        {
            "figure": "CPU per produce round trip, kafka-python as the gateway uses it",
            "value": round(ours["cpu_us_per_trip"]),
            "unit": "us",
            "baseline": round(defaults["cpu_us_per_trip"]),
            "baseline_name": "kafka-python with its defaults",
            "target": "reference",
        },
        {
            "figure": "one event's produce round trip (p50), aiokafka for reference",
            "value": round(results["aiokafka"]["p50_ms"], 3),
            "unit": "ms",
            "baseline": round(ours["p50_ms"], 3),
            "baseline_name": "kafka-python as the gateway uses it",
            "target": "reference",
        },
    ]
    doc = {
        "trips_per_round": args.trips,
        "rounds": args.rounds,
        "figures": figures,
        "results": results,
    }
    save(args.output, doc)
    print(f"{args.trips} round trips x {args.rounds} rounds (medians of the rounds):")
    print(f"{'client':<24}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/trip':>13}")
    for name, r in results.items():
        print(f"{name:<24}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['cpu_us_per_trip']:>13.0f}")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
