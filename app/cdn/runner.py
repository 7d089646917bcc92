"""Runs one seed job: the single entry point shared by the Celery worker and embedded mode."""

from __future__ import annotations

import logging

from app.cdn.seeder import seed
from app.cdn.sink import SeedOutcome
from app.cdn.source import make_source_client
from app.cdn.storage import SeedStorage
from app.state.store import ClusterState, RedisSeedSink

log = logging.getLogger("app.cdn.runner")


async def run_seed_job(state: ClusterState, storage: SeedStorage, tid: str, epoch: int) -> SeedOutcome | None:
    """Seed (tid, epoch) unless a newer epoch superseded it. Never raises for source problems."""
    job = await state.seed_job(tid, epoch)
    if job is None or not await state.seed_heartbeat(tid, epoch):
        log.info("seed job %s epoch %s is no longer current; skipping", tid, epoch)
        return None
    settings = state.settings
    sink = RedisSeedSink(state)
    async with make_source_client(
        connect_timeout=settings.source_connect_timeout_seconds, read_timeout=settings.source_read_timeout_seconds
    ) as client:
        try:
            return await seed(
                job, storage, sink, client, lease_seconds=settings.seed_lease_seconds,
                check_timeout=settings.probe_timeout_seconds,
            )
        except Exception as exc:
            # Fail the task at once so clients fall back to the source instead of waiting on a lease.
            log.exception("seed job %s epoch %s crashed", tid, epoch)
            outcome = SeedOutcome(success=False, error=f"internal seeding error: {exc}", reason="internal")
            await sink.finished(tid, epoch, outcome)
            return outcome
