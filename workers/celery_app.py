"""The Celery application shared by the supernode replicas (producers) and the workers."""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.core import sentinel_url
from app.core.masking import install_log_masking


def create_celery(broker_url: str) -> Celery:
    """``broker_url``: redis://, rediss://, or redis+sentinel://...?master=<name> (the state store's form;
    Settings puts DF_REDIS_SENTINEL_MASTER into it when it names no master)."""
    install_log_masking()  # a worker's httpx logs each signed source URL it fetches
    options: dict[str, Any] = {}
    if sentinel_url.is_sentinel(broker_url):
        broker_url, options = sentinel_url.kombu_broker(broker_url)
    app = Celery("df_supernode", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        # A job whose worker dies is redelivered (preheat jobs; seed jobs opt out, see workers.tasks);
        # their epoch/lease and claim in Redis keep them single.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        task_default_queue="df-seed",
        broker_transport_options=options,
    )
    return app
