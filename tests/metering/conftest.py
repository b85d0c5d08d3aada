"""Fixtures of the metering tests (the harness itself is in `harness.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local import KafkaBroker, TritonServer
from tests.metering.harness import MeteringNode, create_topic


@pytest.fixture
def usage_topic(kafka_broker: KafkaBroker) -> str:
    """A fresh usage topic on the session's broker."""
    return create_topic(kafka_broker.bootstrap_servers)


@pytest.fixture
def node(
    tmp_path: Path, kafka_broker: KafkaBroker, triton_server: TritonServer, usage_topic: str
) -> MeteringNode:
    """A metering node configured for the session's Kafka and Triton."""
    return MeteringNode(
        tmp_path, kafka_broker.bootstrap_servers, usage_topic, triton_server.http_url
    )
