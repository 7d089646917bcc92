"""Starting preheat jobs: on Celery workers in cluster mode, in-process otherwise.
Both end in :func:`app.preheat.runner.run_preheat_job` (as seeding does in app.cdn.dispatch)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from app.preheat.runner import PreheatContext, run_preheat_job

log = logging.getLogger("app.preheat.dispatch")

PREHEAT_TASK_NAME = "workers.tasks.preheat"


class PreheatDispatcher(Protocol):
    async def dispatch(self, pid: str, epoch: int) -> None: ...

    async def close(self) -> None: ...


class InProcessPreheatDispatcher:
    def __init__(self, ctx: PreheatContext) -> None:
        self.ctx = ctx
        self._jobs: set[asyncio.Task[object]] = set()

    async def dispatch(self, pid: str, epoch: int) -> None:
        job = asyncio.create_task(run_preheat_job(self.ctx, pid, epoch))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)


class CeleryPreheatDispatcher:
    def __init__(self, broker_url: str) -> None:
        from workers.celery_app import create_celery

        self.celery = create_celery(broker_url)

    async def dispatch(self, pid: str, epoch: int) -> None:
        # A lost publish is not fatal: the job's lease lapses and the next status poll dispatches again.
        try:
            await asyncio.to_thread(self.celery.send_task, PREHEAT_TASK_NAME, args=[pid, epoch])
        except Exception:
            log.exception("could not enqueue preheat %s epoch %s; the next poll re-dispatches it", pid, epoch)

    async def close(self) -> None:
        self.celery.close()
