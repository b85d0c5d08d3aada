"""Schemathesis fuzzes every operation of the app's own OpenAPI schema, in process (ASGI),
over a populated SQLite database: no 5xx, and every response conforms to the schema."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.pool import NullPool

from api.app import create_app
from schemas import migrate
from schemas.engine import create_engine
from tests.api.conftest import settings as api_settings
from tests.api.support import (
    CHAIN_ID,
    account,
    seed_accrual,
    seed_claim,
    seed_dead_letter,
    seed_dispute,
    seed_epoch,
)


def populated_app() -> FastAPI:
    """The app over a fresh SQLite database with a bit of everything in it.

    Built at import: schemathesis' pytest integration parametrizes from a schema object.
    """
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='api-fuzz-')) / 'royalty.db'}"
    migrate.upgrade(url)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        seed_epoch(conn, 0, [(account(i), i * 7 + 1) for i in range(1, 9)])
        seed_epoch(conn, 1, [(account(1), 10**30), (account(2), 1)], status="committed")
        seed_epoch(conn, 2, [(account(3), 5)], status="computed")
        seed_epoch(conn, 3, [(account(1), 9)], status="claimable")
        seed_dispute(conn, 3, account(77), 9)
        seed_claim(conn, 0, 0, account(1), 8)
        seed_accrual(conn, "u-1", epoch=0, model_id=1, license_id=1, units=3, price_e6=10**20)
        seed_dead_letter(conn, "expired", datetime(2026, 1, 2, tzinfo=UTC), "d-1")
    engine.dispose()
    return create_app(url, api=api_settings(), chain_id=CHAIN_ID, distributor=account(0xD15))


schema = schemathesis.openapi.from_asgi("/openapi.json", populated_app())


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    # A schema-valid request may still be refused: a cursor that is not one of ours (400).
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
