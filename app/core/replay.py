"""Writes that could not reach Redis, kept in order and replayed once it answers again.

Only idempotent writes go here (piece reports, service-down, audit events with their own id): a
replay that lands twice, or after a newer write of the same kind, leaves the same state. The buffer
is this process's memory and is bounded; what a killed replica had buffered is lost, and the state
heals from that as from any lost report (a piece whose report never came is offered again when its
lease ends, and dfget re-reports a piece it holds).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.core.redis import is_outage

log = logging.getLogger("app.replay")

Write = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class _Pending:
    what: str
    write: Write


class ReplayBuffer:
    def __init__(
        self, limit: int, on_outage: Callable[[BaseException], None] | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> None:
        self._on_size = on_size  # told the number of pending writes whenever it changes (a gauge)
        self._pending: deque[_Pending] = deque()
        self._limit = limit
        self._dropped = 0
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._on_outage = on_outage

    def __len__(self) -> int:
        return len(self._pending)

    def _sized(self) -> None:
        if self._on_size is not None:
            self._on_size(len(self._pending))

    @property
    def dropped(self) -> int:
        return self._dropped

    def add(self, what: str, write: Write) -> None:
        if len(self._pending) >= self._limit:
            # Bounded memory wins over completeness: the oldest write is the one most likely to be
            # superseded already (its piece re-reported, its lease re-offered).
            self._pending.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("replay buffer full (%d): dropped %d oldest writes so far", self._limit, self._dropped)
        if not self._pending:
            log.warning("redis unreachable: buffering %s and later writes for replay", what)
        self._pending.append(_Pending(what, write))
        self._sized()
        self._empty.clear()
        self._wake.set()

    async def run(self, retry_seconds: float = 0.25) -> None:
        """Replay forever: in order, one at a time, waiting ``retry_seconds`` while Redis is away."""
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            replayed = 0
            while self._pending:
                item = self._pending[0]
                try:
                    await item.write()
                except Exception as exc:
                    if not is_outage(exc):
                        # A write that fails for another reason will fail again: drop it, say so once.
                        log.warning("replay of %s failed (%s); dropped", item.what, type(exc).__name__, exc_info=True)
                        self._pending.popleft()
                        self._sized()
                        continue
                    if self._on_outage is not None:
                        self._on_outage(exc)
                    await asyncio.sleep(retry_seconds)
                    continue
                self._pending.popleft()
                self._sized()
                replayed += 1
            self._empty.set()
            if replayed:
                log.info("redis back: replayed %d buffered writes", replayed)

    async def flush(self, within: float) -> bool:
        """Wait until the buffer is empty (at shutdown); False if writes are still pending after ``within`` s."""
        try:
            async with asyncio.timeout(within):
                await self._empty.wait()
        except TimeoutError:
            log.warning("shutdown with %d buffered writes not replayed", len(self._pending))
            return False
        return True
