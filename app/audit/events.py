"""Audit events and the buffer they go through on their way to Postgres.

Recording must never block or fail a dfget request: an event is one XADD to a Redis stream (the durable
buffer); a consumer writes batches to the database and acknowledges them only after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from app.core.masking import mask_text, mask_value
from app.core.redis import is_outage
from app.core.replay import ReplayBuffer
from app.state import schema

log = logging.getLogger("app.audit")
_RECORD_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class AuditEvent:
    actor: str  # token name, "dfget", "harbor-webhook", "seeder", ...
    action: str  # e.g. "task.created", "seed.finished", "preheat.status", "webhook.received"
    outcome: str = "ok"  # "ok", "failed", "refused", ...
    task_id: str = ""
    target: str = ""  # what the action was about: a URL, a preheat id, a peer id
    source_ip: str = ""  # where the request came from
    detail: dict[str, Any] = field(default_factory=dict)
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        # Masked here, where every event is born: a source URL's password or signature must reach
        # neither the Redis stream nor the audit table (issue 7). Idempotent, so decoding is safe.
        object.__setattr__(self, "target", mask_text(self.target))
        object.__setattr__(self, "detail", mask_value(self.detail))


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


class RedisAuditLog:
    """Appends events to the ``df:audit`` stream; failures are logged, never raised to the caller.

    With a ``replay`` buffer (the replicas'), an event that meets a Redis outage waits in memory and is
    appended when Redis answers again; without one (a worker process) it is logged and dropped.
    """

    def __init__(self, redis: aioredis.Redis, maxlen: int, replay: ReplayBuffer | None = None) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.replay = replay

    async def _append(self, event: AuditEvent) -> None:
        await self.redis.xadd(
            schema.AUDIT_STREAM, {"event": orjson.dumps(asdict(event))}, maxlen=self.maxlen, approximate=True
        )

    async def record(self, event: AuditEvent) -> None:
        try:
            # Recorded on dfget's path: a hanging Redis must not eat the request's 5 s budget.
            async with asyncio.timeout(_RECORD_TIMEOUT_SECONDS):
                await self._append(event)
        except Exception as exc:
            if self.replay is not None and is_outage(exc):
                self.replay.add(f"audit event {event.action}", lambda: self._append(event))
            else:
                log.exception("audit event %s could not be buffered", event.action)


def decode_event(fields: dict[str, str]) -> AuditEvent:
    return AuditEvent(**orjson.loads(fields["event"]))
