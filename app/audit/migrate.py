"""``alembic upgrade head``, programmatically, safe to run from every replica at once.

On Postgres the upgrade runs in one transaction holding an advisory lock: a second replica waits for
the first and then finds the schema at head. SQLite (one host) has no such lock; a replica that loses
the race fails and its caller retries, by then finding the schema at head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

# The repository root holds alembic.ini and migrations/ (app/audit/migrate.py -> ../../).
ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "migrations"
# pg_advisory_xact_lock key: "df_audit" in ASCII.
_LOCK_KEY = 0x64665F6175646974


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # env.py runs on this connection instead of opening its own (and leaves logging alone).
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await conn.run_sync(_upgrade)
