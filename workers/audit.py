"""The audit consumer as a process of its own: ``python -m workers.audit``.

Every replica already runs one; this is for deployments that want the database writes off the API
hosts, or more consumers while a backlog drains. It joins the same consumer group, so running it next to
the replicas writes nothing twice. ``--migrate-only`` applies the migrations and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

from app.audit.db import create_engine, database_url
from app.audit.migrate import upgrade_to_head
from app.audit.runtime import AuditRuntime
from app.core import logjson
from app.core.config import Settings, get_settings
from app.core.redis import create_redis

log = logging.getLogger("workers.audit")


async def migrate_only(settings: Settings) -> None:
    engine = create_engine(database_url(settings))
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    log.info("audit schema at head in %s", database_url(settings).render_as_string(hide_password=True))


async def consume(settings: Settings, name: str) -> None:
    if settings.embedded:
        # The embedded Redis lives inside the supernode process; a separate process would see nothing.
        raise SystemExit("workers.audit needs DF_REDIS_URL (embedded mode runs its consumer in-process)")
    redis = create_redis(settings)
    runtime = AuditRuntime.start(redis, settings, name)
    if runtime.writer is None:
        await redis.aclose()
        raise SystemExit(f"audit consumer cannot start: {runtime.error}")
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    waiter = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([asyncio.create_task(runtime.wait()), waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Cancelling mid-batch is safe: an uncommitted batch is simply delivered again.
        await runtime.stop()
        await redis.aclose()
    log.info("audit consumer %s stopped", name)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.audit", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=f"worker-{socket.gethostname()}-{os.getpid()}",
                        help="consumer name in the group (a stable name lets a restart resume its own entries)")
    parser.add_argument("--migrate-only", action="store_true", help="apply the migrations and exit")
    args = parser.parse_args()
    settings = get_settings()
    logjson.configure(settings.log_format)  # DF_LOG_FORMAT, as the replicas
    asyncio.run(migrate_only(settings) if args.migrate_only else consume(settings, args.name))


if __name__ == "__main__":
    main()
