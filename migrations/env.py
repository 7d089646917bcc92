"""Alembic environment of the audit log.

Two ways in: the supernode passes an open connection (``app.audit.migrate``), and the ``alembic`` command
line opens its own async engine on the URL the supernode itself would use (``app.audit.db``).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from app.audit.db import create_engine, database_url
from app.audit.models import Base
from app.core.config import Settings

config = context.config
target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode makes future migrations portable.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine() -> None:
    engine = create_engine(database_url(Settings()))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(
        url=database_url(Settings()).render_as_string(hide_password=False), target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


shared = config.attributes.get("connection")
if shared is not None:
    run_on(shared)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    if context.is_offline_mode():
        run_offline()
    else:
        asyncio.run(run_with_own_engine())
