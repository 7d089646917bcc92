"""``python -m app.download``: the download server as its own process, where nginx used to run.

Uses ``DF_LISTEN``, ``DF_DOWNLOAD_PORT`` and the seed directory from ``Settings``.
"""

from __future__ import annotations

import asyncio
import signal

from app.cdn.storage import LocalSeedStorage
from app.core.config import get_settings
from app.download.server import start_download_server, stop_download_server


async def _serve() -> None:
    settings = get_settings()
    runner = await start_download_server(LocalSeedStorage(settings.seed_path), settings.listen, settings.download_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await stop_download_server(runner)


def main() -> None:
    # Deliberately the stdlib selector loop, never uvloop: uvloop lacks loop.sendfile(), which
    # would silently turn every piece into read()+write() copies.
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(_serve())


if __name__ == "__main__":
    main()
