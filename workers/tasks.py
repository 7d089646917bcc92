"""Celery tasks. ``celery -A workers.tasks worker`` runs them."""

from __future__ import annotations

import asyncio
import logging

from celery.signals import celeryd_after_setup, setup_logging

from app.cdn.runner import run_seed_job
from app.cdn.storage import LocalSeedStorage
from app.core import logjson
from app.core.config import get_settings
from app.core.priority import lower_priority
from app.core.redis import create_redis
from app.state.store import ClusterState
from workers.celery_app import create_celery

log = logging.getLogger("workers.tasks")

settings = get_settings()
app = create_celery(settings.broker_url or "memory://")


def _json_logs(loglevel: int | str | None = None, **_: object) -> None:
    """DF_LOG_FORMAT=json in a worker: Celery's own setup is skipped (a receiver is connected) and the
    root logger writes JSON lines, as the replicas do. Run the worker with ``celery --quiet`` so that
    its start banner, which is printed rather than logged, stays out of the JSON stream."""
    logjson.configure("json", loglevel if isinstance(loglevel, int) and loglevel else logging.INFO)


@celeryd_after_setup.connect
def _below_the_replicas(**_: object) -> None:
    """The worker's main process, set up (logging included) and not yet forked: its pool inherits it."""
    lower_priority(settings.seed_worker_nice)


if settings.log_format == "json":
    # At import too: Celery warns (root privileges, ...) before it sets up logging.
    logjson.configure("json")
    setup_logging.connect(_json_logs)


# Acknowledged when it starts, unlike the other tasks: the seed lease in Redis is what restarts a seed
# whose worker died (the next pull after the lease lapses starts a new epoch, which resumes from the
# pieces on disk). A redelivered message could never help: the run that died holds the claim of the
# current epoch until that lapses (seed_claim.lua refuses a second run of an epoch), and with the Redis
# broker it would only come back after the visibility timeout, an hour later.
@app.task(name="workers.tasks.seed", acks_late=False, reject_on_worker_lost=False)
def seed(tid: str, epoch: int) -> str:
    """Fill the shared seed cache for one task (the same function embedded mode runs in-process)."""
    return asyncio.run(_seed(tid, epoch))


async def _seed(tid: str, epoch: int) -> str:
    redis = create_redis(settings)
    try:
        state = ClusterState(redis, settings)
        outcome = await run_seed_job(state, LocalSeedStorage(settings.seed_path), tid, epoch)
    finally:
        await redis.aclose()
    if outcome is None:
        return "superseded"
    return "success" if outcome.success else f"failed: {outcome.reason}"


@app.task(name="workers.tasks.preheat")
def preheat(preheat_id: str, epoch: int) -> str:
    """Run one preheat job (the same function embedded mode runs in-process). It seeds its blobs itself,
    inside this worker slot, so preheats never wait for worker slots that other preheats hold."""
    return asyncio.run(_preheat(preheat_id, epoch))


async def _preheat(preheat_id: str, epoch: int) -> str:
    from app.audit.events import RedisAuditLog
    from app.preheat.runner import PreheatContext, run_preheat_job

    redis = create_redis(settings)
    try:
        state = ClusterState(redis, settings)
        audit = RedisAuditLog(redis, settings.audit_stream_maxlen)
        ctx = PreheatContext(settings, state, LocalSeedStorage(settings.seed_path), audit)
        return await run_preheat_job(ctx, preheat_id, epoch)
    finally:
        await redis.aclose()
