"""Redis round trips per HTTP request.

A round trip is one write of commands to a Redis connection followed by waiting for the replies: one
per plain command, one per pipeline or MULTI block, one per script call (a NOSCRIPT retry is a second),
one per health-check PING. They are counted where redis-py writes to the socket,
``AbstractConnection.send_packed_command``, into a counter that the request's middleware puts in a
context variable; anything outside a request (the gauge loop, heartbeats) finds none and costs a
context-variable lookup only. Measured cost: benchmarks/bench_roundtrips.py.

The counter is a mutable cell shared by reference, so commands sent from tasks the request spawned
(they copy the context) still land in it until the request ends and :func:`finish` closes it.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection


class Trips:
    __slots__ = ("count", "open")

    def __init__(self) -> None:
        self.count = 0
        self.open = True


_current: contextvars.ContextVar[Trips | None] = contextvars.ContextVar("df_redis_trips", default=None)
_installed = False


def start() -> Trips:
    trips = Trips()
    _current.set(trips)
    return trips


def current() -> Trips | None:
    return _current.get()


def finish(trips: Trips) -> int:
    trips.open = False
    return trips.count


def counting(send: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``send`` (a connection's socket write), counted into the current request's :class:`Trips`."""

    @functools.wraps(send)
    async def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        trips = _current.get()
        if trips is not None and trips.open:
            trips.count += 1
        await send(self, *args, **kwargs)

    return counted


def install() -> None:
    """Wrap redis-py's socket write once per process (idempotent). Wrapped at the class, not per pool:
    every pool the process builds (plain, Sentinel, embedded) shares it."""
    global _installed
    if _installed:
        return
    AbstractConnection.send_packed_command = counting(AbstractConnection.send_packed_command)  # type: ignore[method-assign,assignment]
    _installed = True
