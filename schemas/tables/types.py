"""Column types and the declarative base shared by every table.

`Uint256` is the one way a uint256 reaches a database: `NUMERIC(78, 0)` on PostgreSQL, and on
SQLite a zero-padded 78-digit string, because SQLite's NUMERIC affinity silently turns integers
above 2**63 - 1 into floats — the one thing money must never become. Padding keeps ordering and
equality right in SQL on SQLite; arithmetic (`SUM`, `+`) in SQL is not, so sum in Python there.

The naming convention gives every constraint and index a deterministic name, so migrations
written against SQLite and PostgreSQL agree, and a constraint can be dropped by name later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator, TypeEngine

from schemas.money import UINT256_DIGITS, parse_uint

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The metadata of every table of the settlement database."""

ADDRESS_LENGTH = 42  # 0x + 40 hex digits
HASH_LENGTH = 66  # 0x + 64 hex digits


class Base(DeclarativeBase):
    """Declarative base of the ORM row classes; rows mirror the pydantic records."""

    metadata = metadata


class Uint256(TypeDecorator[int]):
    """A uint256 column: Python `int` in, `int` out, exact on every backend.

    PostgreSQL: `NUMERIC(78, 0)`, bound as `Decimal` (the driver's exact numeric type; no
    arithmetic happens on it). SQLite: `VARCHAR(78)` holding the zero-padded decimal digits.
    Binding rejects negatives, values above 2**256 - 1, floats and booleans.
    """

    impl = Numeric(UINT256_DIGITS, 0)
    cache_ok = True

    @property
    def python_type(self) -> type[int]:
        return int

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(UINT256_DIGITS))
        return dialect.type_descriptor(Numeric(UINT256_DIGITS, 0, asdecimal=True))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = parse_uint(value)
        if dialect.name == "sqlite":
            return str(number).zfill(UINT256_DIGITS)
        return Decimal(number)

    def process_literal_param(self, value: int | None, dialect: Dialect) -> str:
        if value is None:
            return "NULL"
        number = parse_uint(value)
        if dialect.name == "sqlite":
            return f"'{str(number).zfill(UINT256_DIGITS)}'"
        return str(number)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # A float here means a row written around this type, already rounded: refuse it.
        raise ValueError(f"uint256 column holds a non-integer value {value!r}")

    def coerce_compared_value(self, op: Any, value: Any) -> TypeEngine[Any]:
        # Compare against literals through this type, so SQLite compares padded strings.
        return self


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant; SQLite (which has no time zones) stores it as naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("naive datetime: store timezone-aware UTC instants only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
"""A JSON document column: JSONB on PostgreSQL (indexable), JSON text on SQLite."""
