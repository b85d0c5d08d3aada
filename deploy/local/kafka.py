"""Apache Kafka, single node in KRaft mode, from the Maven-resolved broker jars."""

from __future__ import annotations

import base64
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.errors import ServiceStartError
from deploy.local.process import ManagedProcess, free_port, port_open, tail
from deploy.local.tools import java_binary, kafka_classpath

# Small internal topics: a single-node broker with the default 50 offsets partitions spends
# seconds creating them on the first consumer group.
BROKER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions={partitions}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=-1
"""

JVM_OPTS = [
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]


def _cluster_id() -> str:
    """A random KRaft cluster id (22 URL-safe base64 characters), never starting with "-":
    the storage tool would read such an id as an option (as Kafka's own `random-uuid` avoids)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaBroker:
    """A throwaway single-node Kafka cluster in `workdir`.

    `stop()` + `start()` is a broker restart that keeps the data and the ports, as fault
    injection tests need; `kill()` is a crash.
    """

    workdir: Path
    partitions: int = 3
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    start_timeout: float = 90.0
    _process: ManagedProcess | None = None
    _formatted: bool = False
    startup_seconds: float = 0.0

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (the root of its process tree)."""
        return self._process.pid if self._process is not None else None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _format(self, config: Path) -> None:
        cluster_id = _cluster_id()
        cmd = [
            java_binary(),
            *JVM_OPTS,
            "-cp",
            kafka_classpath(),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ServiceStartError(f"kafka storage format failed:\n{done.stdout}\n{done.stderr}")
        self._formatted = True

    def start(self) -> KafkaBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        log_dir = self.workdir / "data"
        if not self._formatted:
            config.write_text(
                BROKER_PROPERTIES.format(
                    port=self.port,
                    controller_port=self.controller_port,
                    log_dir=log_dir,
                    partitions=self.partitions,
                )
            )
            self._format(config)
        log = self.workdir / "broker.log"
        self._process = ManagedProcess(
            "kafka",
            [java_binary(), *JVM_OPTS, "-cp", kafka_classpath(), "kafka.Kafka", str(config)],
            log,
        )
        offset = log.stat().st_size if log.exists() else 0
        self._process.start()

        def ready() -> bool:
            if not port_open(self.port):
                return False
            with log.open("rb") as fh:
                fh.seek(offset)
                return b"Kafka Server started" in fh.read()

        self.startup_seconds = self._process.wait_ready(ready, self.start_timeout)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=30)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.workdir / "broker.log", lines)
