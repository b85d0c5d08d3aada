"""Fixtures of the API tests: a migrated database (SQLite and PostgreSQL) and a client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from api.app import create_app
from royalty.config import ApiSettings
from schemas import migrate
from schemas.engine import create_engine
from tests.api.support import PEPPER


@pytest.fixture
def api_url(db_url: str) -> str:
    """A fresh database at the migrations' head (SQLite and PostgreSQL)."""
    migrate.upgrade(db_url)
    return db_url


@pytest.fixture
def engine(api_url: str) -> Iterator[Engine]:
    engine = create_engine(api_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def settings(**overrides: object) -> ApiSettings:
    """API settings of the tests: a known pepper, limits out of the way unless asked."""
    values: dict[str, object] = {
        "key_pepper": PEPPER,
        "rate_limit_per_s": 0,
        "page_size_max": 50,
        "page_size_default": 20,
        "epoch_cache_s": 0,
    }
    values.update(overrides)
    return ApiSettings(**values)  # type: ignore[arg-type]


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(api_url: str) -> Iterator[AppFactory]:
    """Build a client over the test database; keyword arguments go to `create_app`."""
    clients: list[TestClient] = []

    def build(**kwargs: object) -> TestClient:
        api = kwargs.pop("api", None) or settings()
        app: FastAPI = create_app(api_url, api=api, **kwargs)  # type: ignore[arg-type]
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.app.state.context.engine.dispose()  # type: ignore[attr-defined]
        client.close()


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()
