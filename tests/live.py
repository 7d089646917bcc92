"""A real supernode (API and piece server) on loopback ports inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn

from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.download.server import start_download_server
from app.main import create_app, front
from tests.cluster import free_port


@dataclass(frozen=True)
class Live:
    settings: Settings

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    @property
    def api(self) -> str:
        return f"http://{self.node}"

    @property
    def pieces(self) -> str:
        return f"http://127.0.0.1:{self.settings.download_port}"


@asynccontextmanager
async def live_supernode(settings: Settings) -> AsyncIterator[Live]:
    settings = settings.model_copy(update={"port": free_port(), "download_port": free_port()})
    server = uvicorn.Server(
        uvicorn.Config(front(create_app(settings), settings), host="127.0.0.1", port=settings.port, log_level="warning")
    )
    runner = await start_download_server(LocalSeedStorage(settings.seed_path), "127.0.0.1", settings.download_port)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        yield Live(settings)
    finally:
        server.should_exit = True
        await serving
        await runner.cleanup()
