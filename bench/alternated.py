"""Shared by the Kafka client benchmarks: clients measured in alternated rounds against one
throwaway broker, medians of the rounds, results saved with the machine's description."""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.local import KafkaBroker

Client = Callable[[str, str], dict[str, float]]
"""Runs one round against (bootstrap servers, its own topic); returns its figures."""


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_rounds(
    clients: dict[str, Client], rounds: int, *, partitions: int, prefix: str
) -> dict[str, dict[str, Any]]:
    """Start a broker, give each client a topic of its own, run the clients one after the
    other `rounds` times; per client, the median of each figure and every round's figures."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
    broker = KafkaBroker(Path(tempfile.mkdtemp(prefix=f"{prefix}-")) / "kafka").start()
    try:
        from kafka.admin import KafkaAdminClient, NewTopic

        topics = {name: f"{prefix}-{uuid.uuid4().hex[:8]}" for name in clients}
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            admin.create_topics([NewTopic(t, partitions, 1) for t in topics.values()])
        finally:
            admin.close()
        for _ in range(rounds):
            for name, client in clients.items():
                runs[name].append(client(broker.bootstrap_servers, topics[name]))
    finally:
        broker.stop()
    return {
        name: {key: _median([r[key] for r in measured]) for key in measured[0]}
        | {"rounds": measured}
        for name, measured in runs.items()
    }


def save(path: Path, doc: dict[str, Any]) -> None:
    """Write `doc` with the machine's description as the benchmark's saved results."""
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_end": os.getloadavg(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, **doc}, indent=2) + "\n")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
