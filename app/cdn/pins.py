"""Pins: a seed file that a preheat just warmed is kept by the disk GC for ``DF_GC_PREHEAT_PIN_SECONDS``.

Harbor preheats an image so that the next ``docker pull`` finds it in the seed cache; the task state of
an unpulled blob expires after ``DF_TASK_TTL_SECONDS``, and without a pin the next GC under disk
pressure would evict exactly what was warmed. The pin is one Redis string per task (``df:{T}:pin``,
with the task's hash tag, so it is Redis Cluster safe) whose TTL is the pin time: any replica or worker
that runs the GC sees it, and it goes away by itself.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from app.state import schema


async def pin(redis: aioredis.Redis, tid: str, preheat_id: str, seconds: int) -> None:
    """Pin ``tid`` for ``seconds`` from now (a later preheat of the same task extends it); 0: no pin."""
    if seconds > 0:
        await redis.set(schema.pin_key(tid), preheat_id or "-", ex=seconds)

