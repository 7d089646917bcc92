"""Serving an aiohttp app on a socket we bind ourselves (the emulated uploader, the generated origin, and
the tests' source server): the ephemeral port is then known without aiohttp's private attributes."""

from __future__ import annotations

import socket

from aiohttp import web


async def serve(app: web.Application, host: str, port: int, *, shutdown_timeout: float) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (0 = any free port); (runner to clean up, bound port).

    No signal handlers (the caller's process owns its signals) and no access log. ``shutdown_timeout``:
    how long cleanup waits for handlers still running (short where requests are parked on purpose).
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # The listen backlog is SockSite's to set (asyncio listens again when it starts serving): a swarm's
    # peers connect in bursts.
    await web.SockSite(runner, sock, backlog=512).start()
    bound: int = sock.getsockname()[1]
    return runner, bound
