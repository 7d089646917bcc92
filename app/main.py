"""The supernode process: the API app (port 8002) and the piece server (port 8001) on one event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import Response

from app.api import metrics
from app.api.allowlist import DfgetAllowlistMiddleware, parse_networks
from app.api.auth import ensure_api_protected
from app.api.errors import install_error_handlers
from app.api.middleware import VersionPrefixMiddleware
from app.api.responses import JSONBytes
from app.api.routes import audit as audit_routes
from app.api.routes import catalogue, cluster, oapi, peer, peers, preheat, system, tasks, webhook
from app.audit.events import RedisAuditLog
from app.audit.runtime import AuditRuntime
from app.bridge.service import PeerBridge
from app.cdn.dispatch import seed_dispatcher
from app.cdn.gc import run_gc_loop
from app.cdn.policy import source_policy
from app.cdn.source import make_source_client
from app.cdn.storage import LocalSeedStorage
from app.cluster.gauges import run_gauge_loop
from app.cluster.heartbeat import ReplicaPresence
from app.core.config import Settings, get_settings
from app.core.redis import create_redis
from app.preheat.service import PreheatService
from app.protocol.codes import Code
from app.state.store import ClusterState

log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    ensure_api_protected(settings)
    dfget_networks = parse_networks(settings.dfget_allowlist)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(settings)
        state = ClusterState(redis, settings)
        storage = LocalSeedStorage(settings.seed_path)
        dispatcher = seed_dispatcher(settings.broker_url, state, storage)
        probe_client = make_source_client(
            connect_timeout=settings.source_connect_timeout_seconds, read_timeout=settings.probe_timeout_seconds,
            policy=source_policy(settings.source_allowlist),
        )
        app.state.settings = settings
        app.state.redis = redis
        app.state.storage = storage
        app.state.cluster_state = state
        app.state.audit = RedisAuditLog(redis, settings.audit_stream_maxlen)
        app.state.bridge = PeerBridge(settings, state, dispatcher, probe_client, audit=app.state.audit)
        app.state.preheat = PreheatService.build(settings, redis, state, storage, app.state.audit)
        log.info(
            "supernode up: %s mode, advertise %s, seed cache %s",
            "embedded" if settings.embedded else "cluster", settings.advertise_ip, settings.seed_path,
        )
        disk_gc = asyncio.create_task(run_gc_loop(redis, storage, settings))
        gauges = asyncio.create_task(run_gauge_loop(redis, settings.gauge_refresh_seconds))
        presence = ReplicaPresence(redis, settings)
        # The audit consumer: one named consumer per replica in the one group (each event written once).
        app.state.audit_runtime = AuditRuntime.start(redis, settings, presence.id)
        await presence.start()
        heartbeat = asyncio.create_task(presence.run())
        try:
            yield
        finally:
            disk_gc.cancel()
            gauges.cancel()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)  # it deregisters before Redis closes
            await app.state.audit_runtime.stop()
            await app.state.preheat.close()
            await dispatcher.close()
            await probe_client.aclose()
            await redis.aclose()

    app = FastAPI(title="Dragonfly supernode (HA)", version=settings.version, lifespan=lifespan)
    app.state.settings = settings
    app.include_router(system.router)
    app.router.routes[:0] = peer.routes  # first: matched before anything else, on the hot path
    app.include_router(tasks.router)
    app.include_router(peers.router)
    app.include_router(cluster.router)
    app.include_router(catalogue.router)
    app.include_router(preheat.router)
    app.include_router(oapi.router)
    app.include_router(webhook.router)
    app.include_router(audit_routes.router)
    install_error_handlers(app)
    # A middleware added later wraps the earlier ones. The /v<version> prefix is stripped first of all,
    # so metrics label the route reached; requests the allowlist turns away are counted too.
    if dfget_networks:
        app.add_middleware(DfgetAllowlistMiddleware, networks=dfget_networks)
    metrics.instrument(app, settings.version)
    app.add_middleware(VersionPrefixMiddleware)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if request.url.path.startswith("/peer/"):
            # dfget reacts to code 500 exactly as to a transport error (migrate / next node), and a
            # load balancer does not mark the replica down for it.
            return JSONBytes({"code": Code.SYSTEM_ERROR, "msg": f"system error: {type(exc).__name__}"})
        return JSONBytes({"code": 500, "message": "internal error"}, status_code=500)

    return app


async def serve(settings: Settings) -> None:
    import uvicorn

    from app.download.server import start_download_server

    app = create_app(settings)
    # The plain asyncio loop on purpose: uvloop has no loop.sendfile, and the piece server on the same
    # loop would fall back to copying every byte through Python (about 60 % slower).
    config = uvicorn.Config(
        app, host=settings.listen, port=settings.port, log_level="info", access_log=False,
        timeout_keep_alive=600, loop="asyncio",
    )
    server = uvicorn.Server(config)
    storage = LocalSeedStorage(settings.seed_path)
    runner = await start_download_server(storage, settings.listen, settings.download_port)
    try:
        await server.serve()
    finally:
        await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(get_settings()))
