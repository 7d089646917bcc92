"""dfget's download rate limit: one token bucket per dfget process over the bytes it reads (§8.7).

Real dfget 1.0.x reads every piece body (and a back-source body) through one rate limiter shared by
its piece downloads, ``--locallimit`` bytes/s, 20 MiB/s unless set (0.4.x: the piece task's downLink,
~10 MiB/s). Reading slower than the server sends pushes back through TCP, so the piece server (or the
load balancer in front of it) sees a slow client, as it would in production.
"""

from __future__ import annotations

import asyncio

MIB = 1024 * 1024
DFGET_1_0_DEFAULT_RATE = 20 * MIB  # --locallimit default of dfget 1.0.x
READ_CHUNK = 64 * 1024  # bytes read between two payments: small enough to keep the rate smooth


class TokenBucket:
    """``rate`` bytes/s with a burst of ``burst`` bytes (default: a tenth of a second of traffic).

    ``take(n)`` pays for ``n`` bytes at once and then sleeps off any debt, so concurrent callers queue
    behind each other's debt and together never exceed ``burst + rate * elapsed``.
    """

    def __init__(self, rate: float, burst: float | None = None, *, start_full: bool = True) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else self.rate / 10
        # Empty at the start: a link does not begin with a burst (a bigger burst then only absorbs the
        # late wake-ups of a busy event loop, which a capped refill would otherwise lose).
        self._tokens = self.burst if start_full else 0.0
        self._stamp: float | None = None

    async def take(self, amount: int) -> None:
        now = asyncio.get_running_loop().time()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= amount
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)
