"""When a service is missing or gone, the failure is loud and says why.

The smoke tests above would be worthless if they could pass without their service: these
tests take each service away and check that the real client then fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.http as httpclient
from kafka import KafkaProducer
from kafka.errors import KafkaError
from web3 import Web3

from deploy.local import (
    Anvil,
    KafkaBroker,
    ServiceStartError,
    ToolMissingError,
    TritonServer,
    tools,
)
from deploy.local.process import ManagedProcess


def test_missing_anvil_binary_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ROYALTY_ANVIL_BIN", raising=False)
    monkeypatch.setattr(tools, "node_modules", lambda: tmp_path / "node_modules")
    with pytest.raises(ToolMissingError, match=r"anvil not found .*bootstrap"):
        Anvil(tmp_path).start()


def test_unexecutable_binary_is_a_start_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROYALTY_ANVIL_BIN", str(tmp_path / "nope"))
    with pytest.raises(ServiceStartError, match="cannot execute"):
        Anvil(tmp_path).start()


def test_missing_kafka_jars_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROYALTY_KAFKA_LIBS", str(tmp_path))
    with pytest.raises(ToolMissingError, match="Kafka broker jars not found"):
        KafkaBroker(tmp_path / "k").start()


def test_process_dying_before_ready_reports_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess("dies", ["sh", "-c", "echo boom-reason; exit 3"], tmp_path / "log")
    proc.start()
    with pytest.raises(ServiceStartError, match=r"exited with code 3(.|\n)*boom-reason"):
        proc.wait_ready(lambda: False, timeout=10)


def test_readiness_timeout_stops_the_process(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", ["sleep", "60"], tmp_path / "log")
    proc.start()
    with pytest.raises(ServiceStartError, match="not ready after"):
        proc.wait_ready(lambda: False, timeout=0.5)
    assert not proc.running()


@pytest.mark.kafka
def test_client_fails_once_broker_is_killed(tmp_path_factory: pytest.TempPathFactory) -> None:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-kill"), partitions=1).start()
    servers = broker.bootstrap_servers
    broker.kill()
    assert not broker.running()
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=servers, max_block_ms=3000, request_timeout_ms=3000)


@pytest.mark.anvil
def test_client_fails_once_anvil_is_stopped(tmp_path: Path) -> None:
    chain = Anvil(tmp_path).start()
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url, request_kwargs={"timeout": 3}))
    assert w3.eth.block_number == 0
    chain.stop()
    with pytest.raises(Exception, match=r"Connection refused|Max retries|connect"):
        w3.eth.block_number  # noqa: B018 - the call is the point


@pytest.mark.triton
@pytest.mark.slow
def test_client_fails_once_triton_is_killed(tmp_path: Path) -> None:
    server = TritonServer(tmp_path).start()
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_live()
    server.kill()
    with pytest.raises(Exception, match=r"Connection refused|connect|Errno"):
        client.is_server_live()
