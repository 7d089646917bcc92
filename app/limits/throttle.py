"""The seed cache's upload bandwidth (live limit ``seedUploadKiBps``), shared by the live replicas.

Each replica serves ``total / live replicas`` (app.limits.model.Limits.seed_upload_share_kibps, live
replicas from heartbeats): no cross-replica traffic on the piece path, and the sum over the cluster
stays at the total while the replica count is steady (a change of the count, or of the limit, is
picked up within DF_LIMITS_CACHE_SECONDS). Within a replica one token bucket is shared by every
upload, served in FIFO order, so concurrent pieces split the share instead of each getting it.
With no limit (0) pieces keep the zero-copy sendfile path; a limited piece is copied in chunks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

RateSource = Callable[[], Awaitable[int]]  # this replica's share in bytes per second; 0 = unlimited
CHUNK = 64 * 1024
# A burst of at most this long at full rate: an idle bucket does not let a flood through at once.
_BURST_SECONDS = 0.1


class UploadThrottle:
    def __init__(self, rate: RateSource) -> None:
        self._rate = rate
        self._lock = asyncio.Lock()
        self._tokens = 0.0
        self._last = time.monotonic()

    async def rate(self) -> int:
        return max(0, await self._rate())

    async def take(self, n: int, rate: int) -> None:
        """Wait until ``n`` bytes may go out at ``rate`` bytes/s (shared with every other upload)."""
        async with self._lock:  # FIFO: uploads take turns, chunk by chunk
            now = time.monotonic()
            burst = max(float(CHUNK), rate * _BURST_SECONDS)
            self._tokens = min(burst, self._tokens + (now - self._last) * rate)
            self._last = now
            if self._tokens < n:
                await asyncio.sleep((n - self._tokens) / rate)
                self._tokens = 0.0
                self._last = time.monotonic()
            else:
                self._tokens -= n


async def copy_throttled(
    write: Callable[[bytes], Awaitable[None]], fd: int, offset: int, count: int, throttle: UploadThrottle, rate: int
) -> int:
    """Send ``count`` bytes of ``fd`` from ``offset`` within the rate; returns the bytes sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    while sent < count:
        size = min(CHUNK, count - sent)
        chunk = await loop.run_in_executor(None, os.pread, fd, size, offset + sent)
        if not chunk:
            break
        await throttle.take(len(chunk), rate)
        await write(chunk)
        sent += len(chunk)
    return sent
