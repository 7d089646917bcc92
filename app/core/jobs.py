"""Starting long jobs (seeding, preheat) identified by (key, epoch): as Celery tasks in cluster mode,
as background tasks of this process in embedded mode. Both run the same job function; an epoch that is
no longer current makes a job stop at once, so dispatching twice is harmless."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

log = logging.getLogger("app.core.jobs")


class JobDispatcher(Protocol):
    async def dispatch(self, key: str, epoch: int) -> None: ...

    async def close(self) -> None: ...


class InProcessJobs:
    """Jobs as tasks of this event loop, cancelled when the process shuts down."""

    def __init__(self, run: Callable[[str, int], Coroutine[Any, Any, object]]) -> None:
        self.run = run
        self._jobs: set[asyncio.Task[object]] = set()

    async def dispatch(self, key: str, epoch: int) -> None:
        job = asyncio.create_task(self.run(key, epoch))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)


class CeleryJobs:
    """Jobs as Celery tasks named ``task_name`` with the arguments (key, epoch)."""

    def __init__(self, broker_url: str, task_name: str, retried_by: str) -> None:
        from workers.celery_app import create_celery

        self.celery = create_celery(broker_url)
        self.task_name = task_name
        self.retried_by = retried_by  # what starts the job again when this publish is lost (for the log)

    async def dispatch(self, key: str, epoch: int) -> None:
        # A lost publish is not fatal: the job's lease lapses and the caller's next poll dispatches again.
        try:
            await asyncio.to_thread(self.celery.send_task, self.task_name, args=[key, epoch])
        except Exception:
            log.exception("could not enqueue %s %s epoch %s; %s", self.task_name, key, epoch, self.retried_by)

    async def close(self) -> None:
        self.celery.close()
