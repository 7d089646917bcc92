"""The piece server on a thread of its own, with the standard asyncio event loop.

The API runs on uvloop, whose lower per-callback cost matters on dfget's control-plane requests, but
uvloop has no ``loop.sendfile``: on its loop aiohttp would copy every piece through Python. So the
piece port keeps the stdlib loop, on this thread, where a piece goes out with ``sendfile(2)`` (which
releases the GIL) and costs the API thread nothing but the few Python steps of each request.

Everything the two loops share is either immutable, a plain attribute read (readiness), thread-safe
(prometheus_client) or crosses over explicitly: the live upload limit is computed on the API loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from app.download.server import stop_download_server


class PieceServerThread:
    def __init__(self, start: Callable[[], Awaitable[web.AppRunner]]) -> None:
        self._start = start  # starts the piece server (app.download.server.start_download_server)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._failed: BaseException | None = None
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="piece-server", daemon=True)

    def start(self) -> None:
        """Returns once the port listens; raises what starting it raised (a port in use, say)."""
        self._thread.start()
        self._listening.wait()
        if self._failed is not None:
            self._thread.join()
            raise self._failed

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = self._loop.run_until_complete(self._start())
        except BaseException as exc:  # handed to start(), in the thread that asked
            self._failed = exc
            self._listening.set()
            self._loop.close()
            return
        self._listening.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        """Close the listener, let uploads in flight finish (the runner's shutdown timeout), and join."""
        if self._runner is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop_download_server(self._runner), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def on_loop(
    loop: asyncio.AbstractEventLoop, call: Callable[[], Coroutine[Any, Any, int]]
) -> Callable[[], Awaitable[int]]:
    """``call`` (a coroutine function of ``loop``'s thread) made awaitable from another loop."""

    async def crossed() -> int:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))

    return crossed
