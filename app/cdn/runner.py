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
    """Seed the task under its current epoch unless another run holds it (``epoch`` is the one the job
    was started with: an older one after its lease lapsed in a long queue still runs). Never raises for
    source problems."""
    settings = state.settings
    # The sink rides out Redis outages; its claim makes this run the epoch's one seeder, so a
    # redelivered or duplicated job of the task stops here.
    sink = RedisSeedSink(state)
    claimed = await sink.claim(tid)
    job = None if claimed is None else await sink.job(tid, claimed)
    if claimed is None or job is None:
        log.info("seed job %s epoch %s: nothing to seed (done, superseded or running elsewhere); skipping",
                 tid, epoch)
        return None
    if claimed != epoch:
        log.info("seed job %s of epoch %s runs the current epoch %s (its lease lapsed while it was queued)",
                 tid, epoch, claimed)
    epoch = claimed
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
