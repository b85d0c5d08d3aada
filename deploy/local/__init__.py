"""The real local stack on loopback: Kafka (KRaft), anvil, PostgreSQL, Triton, chDB.

Used by `royalty stack up`, by the demo, and by the pytest fixtures in tests/conftest.py.
Each service starts on free ports, waits until it really answers, and stops cleanly.
"""

from deploy.local.anvil import Anvil
from deploy.local.errors import LocalStackError, ServiceStartError, ToolMissingError
from deploy.local.kafka import KafkaBroker
from deploy.local.postgres import Postgres
from deploy.local.triton import TritonServer

__all__ = [
    "Anvil",
    "KafkaBroker",
    "LocalStackError",
    "Postgres",
    "ServiceStartError",
    "ToolMissingError",
    "TritonServer",
]
