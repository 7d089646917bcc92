"""How many Celery seed workers answer a ping, for the ``seed_workers`` gauge. A ping blocks for its
whole reply window, so it runs in a thread and at most every ``PING_EVERY_SECONDS``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.core.jobs import CeleryJobs, JobDispatcher

PING_EVERY_SECONDS = 30.0
PING_TIMEOUT_SECONDS = 0.5


class WorkerProbe:
    def __init__(self, dispatcher: JobDispatcher) -> None:
        self.celery: Any = dispatcher.celery if isinstance(dispatcher, CeleryJobs) else None
        self._next = 0.0
        self.last: int | None = None

    async def count(self) -> int | None:
        """Workers that answered the last ping; None when seeding is in-process (there are none)."""
        if self.celery is None or time.monotonic() < self._next:
            return self.last
        self._next = time.monotonic() + PING_EVERY_SECONDS
        control = self.celery.control

        def ping() -> list[dict[str, Any]]:
            return control.ping(timeout=PING_TIMEOUT_SECONDS) or []

        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS + 2):
                replies = await asyncio.to_thread(ping)
        except Exception:  # an unreachable broker: no worker can be reached either
            self.last = 0
        else:
            self.last = len({name for reply in replies for name in reply})
        return self.last
