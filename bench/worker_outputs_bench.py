"""Benchmark: a stream worker's outputs into Kafka, per record: the workers' aiokafka producer
against kafka-python's `send()`.

A take of the join ends with its accruals produced and acknowledged (`acks=all`, idempotent)
before the database commit. Against one local broker, in the same run and alternated
`--rounds` times, `--records` accruals (~480 bytes, keyed by seven model ids, a three-partition
topic) are produced in takes of `--take`, each take waited for before the next:

- `aiokafka (both workers)` (`stream.loop_outputs.LoopOutputProducer`): aiokafka on an event
  loop, the take handed over from another thread (the join's) and appended to one record batch
  per partition;
- `kafka-python send()` (the baseline, the kafka-python worker's producer before it moved to
  aiokafka): kafka-python's `send()` per record, then `flush()`, acknowledged by all replicas,
  idempotent.

Reports records/s and the process's CPU time per record (all its threads: both clients send
from a thread of their own or the loop's).

    .venv/bin/python bench/worker_outputs_bench.py [--records 60000] [--take 2000] [--rounds 2]

Prints a table and writes bench/results/worker-outputs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.alternated import Client, cpu_seconds, run_rounds, save  # noqa: E402
from stream.loop_outputs import LoopOutputProducer, Outputs, Record  # noqa: E402

RESULTS = REPO / "bench" / "results" / "worker-outputs.json"


def _records(count: int) -> list[Record]:
    return [
        (
            b"%d" % (1000 + i % 7),
            b'{"usage_id":"%032x","fee_micros":%d,"note":"%s"}' % (i, i * 7, b"x" * 400),
        )
        for i in range(count)
    ]


def kafka_python(servers: str, topic: str, records: list[Record], take: int) -> dict[str, float]:
    from kafka import KafkaProducer

    from metering.kafka_usage_publisher import LEAN_CLIENT, KeyPartitions

    # The kafka-python worker's output producer before it moved to aiokafka: acknowledged by
    # all replicas, idempotent; a take's outputs share a few large record batches and are
    # flushed at once, then every send's future is checked.
    producer = KafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=1_000,
        batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        **LEAN_CLIENT,
    )
    partitions = KeyPartitions()
    try:
        producer.send(topic, key=b"w", value=b"warm").get(30)
        cpu, started = cpu_seconds(), time.perf_counter()
        for first in range(0, len(records), take):
            futures: list[Any] = []
            partitions.send(producer, topic, records[first : first + take], futures)
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=0)
        return _summary(len(records), time.perf_counter() - started, cpu_seconds() - cpu)
    finally:
        producer.close()


def loop_outputs(servers: str, topic: str, records: list[Record], take: int) -> dict[str, float]:
    producer = LoopOutputProducer(
        servers, accruals_topic=topic, dead_letter_topic=topic, client_id="bench-outputs"
    )

    async def run() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        producer.attach(loop)
        try:
            await producer.produce(Outputs(accruals=[(b"w", b"warm")]))
            cpu, started = cpu_seconds(), time.perf_counter()
            for first in range(0, len(records), take):
                outputs = Outputs(accruals=records[first : first + take])
                await loop.run_in_executor(None, producer.publish, outputs)
            return _summary(len(records), time.perf_counter() - started, cpu_seconds() - cpu)
        finally:
            await producer.close()

    return asyncio.run(run())


def _summary(count: int, seconds: float, cpu_s: float) -> dict[str, float]:
    return {"records_per_s": count / seconds, "cpu_us_per_record": cpu_s / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--take", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    records = _records(args.records)
    clients: dict[str, Client] = {
        "kafka-python send()": lambda s, t: kafka_python(s, t, records, args.take),
        "aiokafka (both workers)": lambda s, t: loop_outputs(s, t, records, args.take),
    }
    results = run_rounds(clients, args.rounds, partitions=3, prefix="outputs")
    ours, base = results["aiokafka (both workers)"], results["kafka-python send()"]
    figures = [
        {
            "figure": "CPU per output record, both workers (aiokafka on an event loop)",
            "value": round(ours["cpu_us_per_record"], 1),
            "unit": "us",
            "baseline": round(base["cpu_us_per_record"], 1),
            "baseline_name": "kafka-python send() + flush()",
            "target": "reference: part of the worker's CPU per event",
        },
        {
            "figure": "output records/s acknowledged, both workers (aiokafka)",
            "value": round(ours["records_per_s"]),
            "unit": "records/s",
            "baseline": round(base["records_per_s"]),
            "baseline_name": "kafka-python send() + flush()",
            "target": "reference",
        },
    ]
    doc = {
        "records": args.records,
        "take": args.take,
        "rounds": args.rounds,
        "figures": figures,
        "results": results,
    }
    save(args.output, doc)
    print(f"{args.records} records in takes of {args.take} x {args.rounds} rounds (medians):")
    print(f"{'producer':<24}{'records/s':>12}{'CPU us/record':>15}")
    for name, r in results.items():
        print(f"{name:<24}{r['records_per_s']:>12.0f}{r['cpu_us_per_record']:>15.1f}")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
