"""Harness of the metering tests: a configured metering node on the real Kafka and Triton.

`MeteringNode` holds one test's files (signing key, key ring, API keys), its settings and a
fresh usage topic; `running_gateway` serves it in-process with uvicorn on a free port, and
`GatewayProcess` runs it as a child process for the crash tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from deploy.local.process import free_port
from metering.auth import issue_key
from metering.keyfiles import save_api_key_records, write_json_atomic
from metering.server import build_gateway
from metering.signing import KeyRing, SigningKey
from royalty.config import (
    AnalyticsSettings,
    ApiSettings,
    ChainSettings,
    DatabaseSettings,
    EngineSettings,
    EpochSettings,
    KafkaSettings,
    MeteringSettings,
    Settings,
    TritonSettings,
)
from schemas.usage import UsageEvent, parse_usage_event

REPO = Path(__file__).resolve().parents[2]
PEPPER = "test-pepper-0123456789abcdef"
ECHO_MODEL_ID = 1
DOUBLER_MODEL_ID = 2
MODELS: dict[str, dict[str, Any]] = {
    "echo-lm": {"model_id": str(ECHO_MODEL_ID), "metric": "tokens", "units_output": "tokens"},
    "doubler": {"model_id": str(DOUBLER_MODEL_ID), "metric": "batch_items"},
    # Metered here but not served by Triton: Triton's own error must pass through.
    "ghost": {"model_id": str(ECHO_MODEL_ID), "metric": "requests"},
}


def create_topic(bootstrap: str, partitions: int = 3) -> str:
    """A fresh topic for one test."""
    topic = f"usage-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return topic


def consume_events(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0, settle_s: float = 1.0
) -> list[UsageEvent]:
    """Every event of `topic`, waiting until at least `expected` arrived (then `settle_s`
    more, so that extra events would be seen too)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        events: list[UsageEvent] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            for message in consumer:
                event = parse_usage_event(message.value)
                # The Kafka key is the model id: all usage of a model in one partition.
                assert message.key == str(event.data.model_id).encode()
                events.append(event)
            if len(events) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return events
    finally:
        consumer.close()


@dataclass
class MeteringNode:
    """One test's metering node: files under `root`, settings, and API keys per license."""

    root: Path
    bootstrap: str
    topic: str
    triton_url: str
    node_id: str = "node-test"
    overrides: dict[str, Any] = field(default_factory=dict)
    triton_grpc_url: str = "127.0.0.1:8001"
    keys: dict[tuple[int, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = self.root / "metering"
        key = SigningKey.generate(prefix=self.node_id)
        self.signing_key = key
        write_json_atomic(meta / "signing-key.json", key.to_json())
        write_json_atomic(meta / "keyring.json", KeyRing([key.verification_key()]).to_json())
        self.ring = KeyRing([key.verification_key()])
        records = []
        for license_id, model_id in [(101, 1), (102, 1), (103, 1), (201, 2)]:
            plain, record = issue_key(PEPPER.encode(), license_id, model_id, f"test {license_id}")
            self.keys[(license_id, model_id)] = plain
            records.append(record)
        plain, record = issue_key(PEPPER.encode(), 199, 1, "revoked")
        self.revoked_key = plain
        records.append(record.__class__(**{**record.__dict__, "revoked": True}))
        save_api_key_records(meta / "api-keys.json", records)

    def key(self, license_id: int) -> str:
        """The API key of `license_id`."""
        return next(v for (lic, _), v in self.keys.items() if lic == license_id)

    def metering_options(self) -> dict[str, Any]:
        """MeteringSettings keyword arguments of this node."""
        return {
            "node_id": self.node_id,
            "models": MODELS,
            "api_key_pepper": PEPPER,
            "kafka_delivery_timeout_ms": 2000,
            **self.overrides,
        }

    def settings(self) -> Settings:
        """This node's settings (built from arguments, not the caller's environment)."""
        return Settings(
            engine=EngineSettings(data_dir=self.root),
            db=DatabaseSettings(),
            chain=ChainSettings(),
            kafka=KafkaSettings(bootstrap_servers=self.bootstrap, usage_topic=self.topic),
            analytics=AnalyticsSettings(),
            triton=TritonSettings(http_url=self.triton_url, grpc_url=self.triton_grpc_url),
            api=ApiSettings(),
            epochs=EpochSettings(),
            metering=MeteringSettings(**self.metering_options()),
        )

    def environment(self) -> dict[str, str]:
        """The same settings as ROYALTY_* variables, for a child process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROYALTY_")}
        env["ROYALTY_DATA_DIR"] = str(self.root)
        env["ROYALTY_KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap
        env["ROYALTY_KAFKA_USAGE_TOPIC"] = self.topic
        env["ROYALTY_TRITON_HTTP_URL"] = self.triton_url
        env["ROYALTY_TRITON_GRPC_URL"] = self.triton_grpc_url
        env["ROYALTY_LOG_LEVEL"] = "info"
        for name, value in self.metering_options().items():
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            env[f"ROYALTY_METERING_{name.upper()}"] = text
        env["PYTHONPATH"] = str(REPO)
        return env


class GatewayThread:
    """An ASGI app (the gateway, the ingest) served by uvicorn in a thread of the test
    process."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, http="h11", lifespan="on", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def start(self) -> GatewayThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextmanager
def running_gateway(node: MeteringNode) -> Iterator[GatewayThread]:
    """The node's gateway, serving in-process; stopped (producer flushed) on exit."""
    gateway = GatewayThread(build_gateway(node.settings())).start()
    try:
        yield gateway
    finally:
        gateway.stop()


class GatewayProcess:
    """`python -m metering.server` as a child process (for SIGKILL tests)."""

    def __init__(self, node: MeteringNode, port: int | None = None) -> None:
        self.node = node
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = node.root / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> GatewayProcess:
        env = self.node.environment()
        env["ROYALTY_METERING_PORT"] = str(self.port)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "metering.server"],
                env=env,
                cwd=self.node.root,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/metrics", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def echo_body(prompt: str, **extra: Any) -> dict[str, Any]:
    """A KServe v2 JSON request for `echo-lm`."""
    return {
        "inputs": [{"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": [prompt]}],
        **extra,
    }


def doubler_body(batch: int, width: int = 3) -> dict[str, Any]:
    """A KServe v2 JSON request for `doubler` with `batch` items."""
    return {
        "inputs": [
            {
                "name": "x",
                "shape": [batch, width],
                "datatype": "FP32",
                "data": [float(i) for i in range(batch * width)],
            }
        ]
    }
