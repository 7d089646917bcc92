"""Starting preheat jobs: on Celery workers in cluster mode, in-process otherwise.
Both end in :func:`app.preheat.runner.run_preheat_job` (as seeding does in app.cdn.dispatch)."""

from __future__ import annotations

from functools import partial

from app.core.jobs import CeleryJobs, InProcessJobs, JobDispatcher
from app.preheat.runner import PreheatContext, run_preheat_job

PREHEAT_TASK_NAME = "workers.tasks.preheat"

PreheatDispatcher = JobDispatcher


def preheat_dispatcher(broker_url: str, ctx: PreheatContext) -> JobDispatcher:
    if broker_url:
        retry = "the job's lease lapses and the next status poll re-dispatches it"
        return CeleryJobs(broker_url, PREHEAT_TASK_NAME, retry)
    return InProcessJobs(partial(run_preheat_job, ctx))
