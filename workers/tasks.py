"""Celery tasks. ``celery -A workers.tasks worker`` runs them."""

from __future__ import annotations

import asyncio
import logging

from app.cdn.runner import run_seed_job
from app.cdn.storage import LocalSeedStorage
from app.core.config import get_settings
from app.core.redis import create_redis
from app.state.store import ClusterState
from workers.celery_app import create_celery

log = logging.getLogger("workers.tasks")

settings = get_settings()
app = create_celery(settings.broker_url or "memory://")


@app.task(name="workers.tasks.seed")
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
