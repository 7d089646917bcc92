"""Rate limiting of log records that repeat once per request.

A client that sends the same bad request in a loop, or a Redis outage under a swarm of dfgets, must
not turn into one warning per request: the log is what an operator reads, and a flood hides the
first (useful) record and costs disk and CPU. The first record of a kind is kept; the same kind seen
again within ``interval`` seconds is only counted, and the first one after the interval carries the
count of those suppressed in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

# Loggers that write a record per request on bad input or during an outage (see the callers).
PER_REQUEST_LOGGERS = (
    "app.api",  # UnhandledErrorMiddleware: 503 during a Redis outage, client disconnects
    "app.api.peer",  # dfget routes: Redis outages, disconnects
    "app.api.limits",  # oversized requests, header-read timeouts
    "app.cdn.policy",  # a refused source, once per registration of it
    "app.download.server",  # malformed piece requests
    "uvicorn.error",  # "Invalid HTTP request received."
    "aiohttp.server",  # the piece server's own request errors
)


class RepeatFilter(logging.Filter):
    """Keeps the first WARNING-or-above record of a kind, then one per ``interval`` with a count.

    A kind is the logger, the level and the message template (not its arguments): "redis
    unavailable on /peer/task" and the same on another path or from another client are one kind, which
    is what floods. INFO and below pass untouched (they are off in production or already rare).
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # logging may be called from executor threads too
        # kind -> (time the last record of it was let through, records suppressed since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._seen.get(kind)
            if last is not None and now - last[0] < self.interval:
                self._seen[kind] = (last[0], last[1] + 1)
                return False
            self._seen[kind] = (now, 0)
            if len(self._seen) > 10_000:  # bounded: message templates are few, but be safe
                self._seen = {kind: (now, 0)}
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{last[1]} more like this in the last {now - last[0]:.0f}s]"
        return True


def install(names: Iterable[str] = PER_REQUEST_LOGGERS, interval: float = 60.0) -> RepeatFilter:
    """One shared filter on each named logger (a filter sees only records logged on its own logger)."""
    repeat = RepeatFilter(interval)
    for name in names:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
            logger.removeFilter(old)
        logger.addFilter(repeat)
    return repeat
