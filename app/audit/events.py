"""Audit events and the buffer they go through on their way to Postgres.

Recording must never block or fail a dfget request: an event is one XADD to a Redis stream (the durable
buffer); a consumer writes batches to the database and acknowledges them only after the commit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from app.state import schema

log = logging.getLogger("app.audit")


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


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


class RedisAuditLog:
    """Appends events to the ``df:audit`` stream; failures are logged, never raised to the caller."""

    def __init__(self, redis: aioredis.Redis, maxlen: int) -> None:
        self.redis = redis
        self.maxlen = maxlen

    async def record(self, event: AuditEvent) -> None:
        try:
            await self.redis.xadd(
                schema.AUDIT_STREAM, {"event": orjson.dumps(asdict(event))}, maxlen=self.maxlen, approximate=True
            )
        except Exception:
            log.exception("audit event %s could not be buffered", event.action)


def decode_event(fields: dict[str, str]) -> AuditEvent:
    return AuditEvent(**orjson.loads(fields["event"]))
