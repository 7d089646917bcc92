"""Runs one seed job: the single entry point shared by the Celery worker and embedded mode."""

from __future__ import annotations

import logging
import time
from typing import Any

from app.audit.events import AuditEvent, RedisAuditLog
from app.cdn.policy import source_policy
from app.cdn.seeder import seed
from app.cdn.sink import SeedOutcome
from app.cdn.source import make_source_client
from app.cdn.storage import SeedStorage
from app.observability import seedstats
from app.state.store import ClusterState, RedisSeedSink

log = logging.getLogger("app.cdn.runner")


async def run_seed_job(state: ClusterState, storage: SeedStorage, tid: str, epoch: int) -> SeedOutcome | None:
    """Seed (tid, epoch) unless a newer epoch superseded it. Never raises for source problems."""
    settings = state.settings
    # The sink rides out Redis outages; its first heartbeat claims the epoch for this run only, so a
    # redelivered or duplicated job of the same epoch stops here.
    sink = RedisSeedSink(state)
    job = await sink.job(tid, epoch)
    if job is None or not await sink.heartbeat(tid, epoch):
        log.info("seed job %s epoch %s is no longer current (or already running elsewhere); skipping", tid, epoch)
        return None
    # One XADD per event, the same buffer the API uses; the database is never awaited here.
    await seedstats.started(state.redis)
    audit = RedisAuditLog(state.redis, settings.audit_stream_maxlen)
    await audit.record(AuditEvent(actor="seeder", action="seed.started", task_id=tid, target=job.task_url,
                                  detail={"epoch": epoch}))
    started = time.monotonic()
    async with make_source_client(
        connect_timeout=settings.source_connect_timeout_seconds, read_timeout=settings.source_read_timeout_seconds,
        policy=source_policy(settings),
    ) as client:
        try:
            outcome = await seed(
                job, storage, sink, client, lease_seconds=settings.seed_lease_seconds,
                check_timeout=settings.probe_timeout_seconds,
            )
        except Exception as exc:
            # Fail the task at once so clients fall back to the source instead of waiting on a lease.
            log.exception("seed job %s epoch %s crashed", tid, epoch)
            outcome = SeedOutcome(success=False, error=f"internal seeding error: {exc}", reason="internal")
            await sink.finished(tid, epoch, outcome)
    await seedstats.finished(state.redis, success=outcome.success, cached=outcome.cached)
    await audit.record(_seed_event(tid, job.task_url, epoch, outcome, time.monotonic() - started))
    return outcome


def _seed_event(tid: str, url: str, epoch: int, outcome: SeedOutcome, seconds: float) -> AuditEvent:
    detail: dict[str, Any] = {"epoch": epoch, "bytes": outcome.raw_length, "fileLength": outcome.file_length,
              "pieces": outcome.piece_total, "durationMs": int(seconds * 1000)}
    if outcome.success:
        return AuditEvent(actor="seeder", action="seed.finished", task_id=tid, target=url,
                          detail=detail | {"md5": outcome.real_md5})
    return AuditEvent(actor="seeder", action="seed.failed", outcome="failed", task_id=tid, target=url,
                      detail=detail | {"reason": outcome.reason, "error": outcome.error[:500]})
