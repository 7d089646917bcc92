"""The per-task record of a source-policy refusal (``df:{T}:refused``), for the REST task detail.

A registration the source policy refuses never creates its task, so without this record the operator
asking ``GET /api/v1/tasks/{id}`` for the task a user complains about would see a bare 404. It is
written on the refusal path (dfget's), so it is one script call, bounded in time, and its failure
never changes the answer: the 607 is right whether or not the record could be kept.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.core.timefmt import rfc3339_ms
from app.state import schema
from app.tasks.models import REFUSED_STATUS, SeedProgress, SourceRefusal, TaskView

log = logging.getLogger("app.tasks.refusals")

_WRITE_TIMEOUT_SECONDS = 1.0  # on dfget's 5 s path: a hanging Redis must not eat it

# One atomic update: racing replicas refusing the same task each add to the count, the first time stays.
_RECORD = """
redis.call('HSET', KEYS[1], 'reason', ARGV[1], 'message', ARGV[2], 'url', ARGV[3], 'last', ARGV[4])
redis.call('HSETNX', KEYS[1], 'first', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


async def record_refusal(
    redis: aioredis.Redis, tid: str, reason: str, message: str, url: str, ttl_seconds: float
) -> None:
    """Keep (or update) the refusal of ``tid`` for ``ttl_seconds`` (the task TTL: as long as an idle task
    would be kept, and so bounded like accepted tasks). ``message`` and ``url`` must already be safe to
    show: no resolved address, credentials masked."""
    now = int(time.time() * 1000)
    try:
        async with asyncio.timeout(_WRITE_TIMEOUT_SECONDS):
            await redis.register_script(_RECORD)(
                keys=[schema.refused_key(tid)], args=[reason, message, url, now, int(ttl_seconds * 1000)]
            )
    except (RedisError, TimeoutError) as exc:
        log.warning("refusal of task %s not recorded for the task detail: %r", tid, exc)


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


async def read_refusal(redis: aioredis.Redis, tid: str) -> tuple[SourceRefusal, dict[str, str]] | None:
    """The refusal of ``tid`` and its raw fields, or None."""
    fields: dict[str, str] = await redis.hgetall(schema.refused_key(tid))  # type: ignore[assignment]
    if not fields.get("reason"):
        return None
    first, last = _int(fields.get("first")), _int(fields.get("last"))
    refusal = SourceRefusal(
        reason=fields["reason"],
        message=fields.get("message", ""),
        url=fields.get("url") or None,
        count=_int(fields.get("count")),
        first=rfc3339_ms(first) if first else None,
        last=rfc3339_ms(last) if last else None,
    )
    return refusal, fields


def refused_view(tid: str, refusal: SourceRefusal, fields: dict[str, str]) -> TaskView:
    """The detail of a task that only exists as a refusal: nothing seeded, no peer."""
    return TaskView(
        ID=tid,
        cdnStatus=REFUSED_STATUS,
        rawURL=fields.get("url") or None,
        peers=0,
        progress=SeedProgress(piecesSeeded=0, bytes=0),
        sourceRefusal=refusal,
    )
