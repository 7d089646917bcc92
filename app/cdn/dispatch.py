"""Starting seed jobs: on Celery workers in cluster mode, in-process in embedded mode.
Both end in :func:`app.cdn.runner.run_seed_job`."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from app.cdn.runner import run_seed_job
from app.cdn.storage import SeedStorage
from app.state.store import ClusterState

log = logging.getLogger("app.cdn.dispatch")

SEED_TASK_NAME = "workers.tasks.seed"


class SeedDispatcher(Protocol):
    async def dispatch(self, tid: str, epoch: int) -> None: ...

    async def close(self) -> None: ...


class InProcessDispatcher:
    def __init__(self, state: ClusterState, storage: SeedStorage) -> None:
        self.state = state
        self.storage = storage
        self._jobs: set[asyncio.Task[object]] = set()

    async def dispatch(self, tid: str, epoch: int) -> None:
        job = asyncio.create_task(run_seed_job(self.state, self.storage, tid, epoch))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)


class CeleryDispatcher:
    def __init__(self, broker_url: str) -> None:
        from workers.celery_app import create_celery

        self.celery = create_celery(broker_url)

    async def dispatch(self, tid: str, epoch: int) -> None:
        # If this publish is lost, the seed lease expires and the next pull or registration re-triggers.
        try:
            await asyncio.to_thread(self.celery.send_task, SEED_TASK_NAME, args=[tid, epoch])
        except Exception:
            log.exception("could not enqueue seed job %s epoch %s; the lease will re-trigger it", tid, epoch)

    async def close(self) -> None:
        self.celery.close()
