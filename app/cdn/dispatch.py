"""Starting seed jobs: on Celery workers in cluster mode, in-process in embedded mode.
Both end in :func:`app.cdn.runner.run_seed_job`."""

from __future__ import annotations

from functools import partial

from app.cdn.runner import run_seed_job
from app.cdn.storage import SeedStorage
from app.core.jobs import CeleryJobs, InProcessJobs, JobDispatcher
from app.state.store import ClusterState

SEED_TASK_NAME = "workers.tasks.seed"

SeedDispatcher = JobDispatcher


def seed_dispatcher(broker_url: str, state: ClusterState, storage: SeedStorage) -> JobDispatcher:
    if broker_url:
        return CeleryJobs(broker_url, SEED_TASK_NAME, "the seed lease lapses and the next pull re-triggers it")
    return InProcessJobs(partial(run_seed_job, state, storage))
