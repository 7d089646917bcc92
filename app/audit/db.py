"""The audit database: which URL, and one async engine per process.

``DF_DATABASE_URL`` names it (``postgresql+asyncpg://user:pw@host/db``; plain ``postgresql://`` and
``sqlite://`` are given their async drivers). When it is empty in embedded mode, the log lives in
SQLite next to the rest of the data: ``sqlite+aiosqlite:///<DF_HOME>/audit.db``. When it is empty in
cluster mode there is no audit database at all (see :class:`AuditNotConfigured`): a SQLite file per
replica would split the log over hosts, and each replica's API would answer with its own part only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core.config import Settings

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite",
}
# A black-holed database host must not stall the consumer (or an API query) for asyncpg's default 60 s.
CONNECT_TIMEOUT_SECONDS = 5.0


class AuditNotConfigured(ValueError):
    """Cluster mode without DF_DATABASE_URL."""


def database_url(settings: Settings) -> URL:
    raw = settings.database_url.strip()
    if not raw:
        if not settings.embedded:
            raise AuditNotConfigured(
                "DF_DATABASE_URL is empty in cluster mode: audit events wait in Redis (bounded by "
                "DF_AUDIT_STREAM_MAXLEN) until a replica starts with a database"
            )
        home = settings.home.resolve()
        return make_url(f"sqlite+aiosqlite:///{home / 'audit.db'}")
    url = make_url(raw)
    if url.drivername in _ASYNC_DRIVERS:
        url = url.set(drivername=_ASYNC_DRIVERS[url.drivername])
    return url


def create_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: after a Postgres restart or pg_terminate_backend every pooled connection is dead.
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=2, max_overflow=4,
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS, "command_timeout": 30},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets API queries read while the consumer writes; busy_timeout rides out a concurrent writer
    # (two embedded processes, or a replica next to `python -m workers.audit`).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
