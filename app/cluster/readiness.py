"""This replica's readiness: whether a load balancer should send it new work.

Two things make a replica not ready: it cannot reach Redis (every answer it could give would be a
"wait"), or it is draining after SIGTERM. Liveness (``/_ping``, dfget's own check) is separate and
stays "OK" in both cases: the replica still answers, and during a Redis outage that every replica
shares, answering dfget with "wait" is better than no replica at all (see deploy/haproxy/haproxy.cfg).

The state is this process's own view of itself, so it lives in memory: no other replica needs it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from app.core.redis import is_outage

log = logging.getLogger("app.readiness")


class Readiness:
    def __init__(self) -> None:
        self.draining = False
        self.redis_ok = True
        self._outage_since = 0.0
        self._last_error = ""

    @property
    def ready(self) -> bool:
        return self.redis_ok and not self.draining

    def reasons(self) -> list[str]:
        reasons = []
        if not self.redis_ok:
            reasons.append(f"redis unreachable for {time.monotonic() - self._outage_since:.1f}s: {self._last_error}")
        if self.draining:
            reasons.append("draining")
        return reasons

    def start_drain(self) -> None:
        if not self.draining:
            self.draining = True
            log.info("draining: readiness is now false; still serving until the drain ends")

    def redis_failed(self, exc: BaseException) -> None:
        """A request or the monitor found Redis unusable: not ready until the monitor sees it back."""
        self._last_error = type(exc).__name__
        if self.redis_ok:
            self.redis_ok = False
            self._outage_since = time.monotonic()
            log.warning("redis unreachable (%s): readiness is now false", self._last_error)

    def redis_answered(self) -> None:
        if not self.redis_ok:
            self.redis_ok = True
            log.info("redis reachable again after %.1fs: ready", time.monotonic() - self._outage_since)

    async def monitor(self, redis: aioredis.Redis, interval: float) -> None:
        """PING Redis every ``interval``; the verdict feeds ``/readyz`` and ends a request-seen outage."""
        while True:
            try:
                async with asyncio.timeout(max(interval, 0.5)):
                    await redis.ping()
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("readiness ping failed unexpectedly", exc_info=True)
                self.redis_failed(exc)
            else:
                self.redis_answered()
            await asyncio.sleep(interval)
