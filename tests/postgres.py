"""Real PostgreSQL for the tests: a fresh database per test (see the ``pg_db`` fixture in conftest.py)
and a way to read rows without going through the code under test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import make_url

PG_ADMIN = os.environ.get("DF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
_databases = itertools.count()


async def admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_ADMIN, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} unusable ({exc}); run tests/services/postgres.sh")


async def fresh_database() -> AsyncIterator[str]:
    """Create a database, yield its SQLAlchemy async URL (the DF_DATABASE_URL form), drop it."""
    name = f"df_audit_test_{os.getpid()}_{next(_databases)}"
    admin = await admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(PG_ADMIN).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def plain_url(url: str) -> str:
    """The asyncpg form of a SQLAlchemy URL, for checking rows independently of the code under test."""
    return make_url(url).set(drivername="postgresql").render_as_string(False)


async def rows(url: str, sql: str = "SELECT * FROM audit_events", *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(url), timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
