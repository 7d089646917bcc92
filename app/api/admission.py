"""Admission of dfget requests: a bounded number worked on at once per process, the rest in arrival order.

An event loop serves every request it has accepted at once, each getting a slice of the CPU in turn.
Under a herd (5,000 dfgets started together, 1,000 of them on new tasks) that means every request
finishes near the end of the whole burst: when the burst is more than dfget's 5 s of work, *every*
registration times out, each costing its dfget a migration, and after its last node a download from
the source (bench_scale's 1,000 x 5 herd: 4,997 of 5,000 peers). Working on at most
``DF_DFGET_CONCURRENCY`` requests at once and queueing the others first come, first served lets the
early ones finish early instead.

A request that waited ``DF_DFGET_QUEUE_SECONDS`` for its turn is not worked on: it gets the route's
"ask again" answer (602 to a pull, 609 to a registration, the usual reply to a report), the same one
a Redis outage gets. To dfget that is a pause and the same request again on the same node, where a
timeout would have cost a node of its list. A report answered so is lost, as a timed-out one would be
(dfget does not send it again); pulls carry the same progress.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge

_NS, _SUB = "dragonfly", "supernode"

deferred_total = Counter(
    "dfget_deferred_total", "dfget requests answered 'ask again' unworked, after waiting DF_DFGET_QUEUE_SECONDS"
    " for their turn.", ["handler"], namespace=_NS, subsystem=_SUB,
)
waiting = Gauge(
    "dfget_waiting", "dfget requests waiting for their turn now (DF_DFGET_CONCURRENCY are worked on at once).",
    namespace=_NS, subsystem=_SUB, multiprocess_mode="livesum",
)


class Admission:
    """At most ``limit`` requests admitted at once; the others wait, first come first served, for at
    most ``patience`` seconds. One per process: it only orders this process's own work."""

    def __init__(self, limit: int, patience: float) -> None:
        self.patience = patience
        self._slots = asyncio.Semaphore(limit)  # its waiters are woken in the order they came

    async def enter(self) -> bool:
        """True once the request may be worked on (call :meth:`leave` after); False when it waited
        ``patience`` seconds in vain (nothing to leave)."""
        if not self._slots.locked():
            await self._slots.acquire()  # free: no wait, no suspension
            return True
        waiting.inc()
        try:
            async with asyncio.timeout(self.patience):
                await self._slots.acquire()
            return True
        except TimeoutError:
            return False
        finally:
            waiting.dec()

    def leave(self) -> None:
        self._slots.release()

