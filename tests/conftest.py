"""Shared fixtures: the real services of the local stack, started once per test session.

Services start lazily, only for the tests that ask for them, on free loopback ports. A service
that cannot start fails the tests that need it with the reason (never a skip): a test that
passes without its service would prove nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from deploy.local import Anvil, KafkaBroker, Postgres, TritonServer

settings.register_profile(
    "ci", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real single-node KRaft Kafka broker for the whole session."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def anvil_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """A real anvil node (automine) for the whole session."""
    chain = Anvil(tmp_path_factory.mktemp("anvil")).start()
    yield chain
    chain.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A real PostgreSQL server in a throwaway cluster for the whole session."""
    server = Postgres(tmp_path_factory.mktemp("postgres")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real Triton server (CPU) serving the demo models for the whole session."""
    server = TritonServer(tmp_path_factory.mktemp("triton")).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: Postgres) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh SQLite file database."""
    return f"sqlite:///{tmp_path / 'royalty.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database, once on SQLite and once on PostgreSQL: port contract tests
    take this fixture so every adapter passes the same suite."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'royalty.db'}"
        return
    server: Postgres = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    yield url
    server.drop_database(name)


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one chDB directory: chDB opens a single path per process."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def analytics_database(chdb_dir: Path) -> Iterator[tuple[str, str]]:
    """(chDB URL, fresh database name) for one test; the database is dropped after it."""
    import clickhouse_connect

    url = f"chdb://{chdb_dir}"
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = clickhouse_connect.get_client(dsn=url)
    client.command(f"CREATE DATABASE {name}")
    yield url, name
    client.command(f"DROP DATABASE IF EXISTS {name}")
