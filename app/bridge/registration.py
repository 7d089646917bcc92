"""The registration-time source probe (PROTOCOL §5.1 step 2), done once per task cluster-wide.

The first registration of a task takes a short Redis lock and probes; concurrent registrations of the
same task on any replica wait for its result instead of probing again (the Go supernode probed on
every registration, §15.15). Within one process those waiters share one wait (``ProbeWaits``): a herd
of a thousand first registrations polled Redis a thousand times every 50 ms, used up the connection
pool and pushed the registrations past dfget's 5 s (benchmarks/SCALE-RESULTS.md).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import httpx

from app.cdn.source import probe_source
from app.core.config import Settings
from app.state.store import ClusterState

# Probe outcomes that make dfget go to the source at once (code 607) rather than wait on a seed job
# that cannot succeed. 5xx is left to the seed job: it may be transient.
_REFUSING = {"not_found", "auth", "unreachable", "forbidden"}  # forbidden: app.cdn.policy
_POLL_SECONDS = 0.05
# Long enough for registrations racing the prober to read its verdict.
_SHORT_VERDICT_SECONDS = 3.0


async def probe_geometry(
    settings: Settings,
    state: ClusterState,
    client: httpx.AsyncClient,
    tid: str,
    url: str,
    headers: dict[str, str],
) -> int | str:
    """The source length (-1 unknown), or the reason text when the source refuses."""
    deadline = time.monotonic() + settings.probe_timeout_seconds + 0.5
    while not await state.try_lock_probe(tid, settings.probe_timeout_seconds + 1.0):
        if time.monotonic() > deadline:
            break  # the prober vanished: probe ourselves rather than fail the client
        geometry = await state.task_geometry(tid)
        if geometry is not None:
            return geometry[0]
        refused = await state.unreachable_reason(tid)
        if refused is not None:
            return refused
        await asyncio.sleep(_POLL_SECONDS * random.uniform(0.5, 1.5))  # replicas do not poll in step

    # The lock may have been free because a prober just finished: its verdict stands.
    geometry = await state.task_geometry(tid)
    if geometry is not None:
        await state.release_probe(tid)
        return geometry[0]
    try:
        probe = await probe_source(client, url, headers, settings.probe_timeout_seconds)
    except BaseException:
        # Whatever went wrong, the next registration must probe at once, not wait out the lock
        # (4.5 s of dfget's 5 s registration timeout).
        await state.release_probe(tid)
        raise
    if probe.reason in _REFUSING:
        message = f"source {url} refused: {probe.reason} (HTTP {probe.status})"
        if probe.reason == "forbidden":  # a redirect hop the source policy refused: say which and why
            message = probe.error
        ttl = settings.fail_access_seconds if probe.reason == "not_found" else _SHORT_VERDICT_SECONDS
        await state.mark_unreachable(tid, message, ttl)
        await state.release_probe(tid)
        return message
    return probe.length


Geometry = int | str


class ProbeWaits:
    """Registrations of one task in this process await one ``probe_geometry``.

    Only a deduplication of concurrent work (no replica needs it, nothing outlives the wait). The
    verdict is the one every waiter would read from Redis anyway; if the shared wait fails, each
    waiter but the first tries on its own, as without sharing.
    """

    def __init__(self) -> None:
        self._waits: dict[str, asyncio.Future[Geometry]] = {}

    async def geometry(self, tid: str, probe: Callable[[], Awaitable[Geometry]]) -> Geometry:
        shared = self._waits.get(tid)
        if shared is None:
            task: asyncio.Future[Geometry] = asyncio.ensure_future(probe())
            self._waits[tid] = task
            task.add_done_callback(lambda _done: self._waits.pop(tid, None))
            return await asyncio.shield(task)
        try:
            return await asyncio.shield(shared)
        except Exception:
            return await probe()
