"""The supernode process: the API app (port 8002) and the piece server (port 8001) on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI
from starlette.types import ASGIApp

from app.api import metrics
from app.api.admission import Admission
from app.api.allowlist import DfgetAllowlistMiddleware, parse_networks
from app.api.auth import ensure_api_protected
from app.api.errors import install_error_handlers
from app.api.fastpath import DfgetFastPath
from app.api.limits import BodyLimitMiddleware, guarded_protocol
from app.api.middleware import UnhandledErrorMiddleware, VersionPrefixMiddleware
from app.api.requestid import RequestIdMiddleware
from app.api.routes import audit as audit_routes
from app.api.routes import catalogue, cluster, oapi, ops, peer, peers, preheat, system, tasks, webhook
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
from app.cluster.maintenance import run_index_prune
from app.cluster.readiness import Readiness
from app.core import logjson, lograte
from app.core.backlog import listen_backlog
from app.core.config import Settings, get_settings
from app.core.masking import install_log_masking
from app.core.process import ProcessRole
from app.core.redis import create_redis
from app.core.replay import ReplayBuffer
from app.observability import exposition, local, shared
from app.observability.processes import ReplicaProcesses
from app.observability.workers import WorkerProbe
from app.preheat.service import PreheatService
from app.server import heap
from app.server.supervisor import WORKER_SIGNALS
from app.state.store import ClusterState

log = logging.getLogger("app")


def create_app(
    settings: Settings | None = None, readiness: Readiness | None = None, role: ProcessRole | None = None
) -> FastAPI:
    """The API app. ``readiness`` is shared with the piece server of the same process (``serve``);
    ``role`` says which worker of the replica this is (app.core.process; default: the only one)."""
    settings = settings or get_settings()
    role = role or ProcessRole()
    readiness = readiness if readiness is not None else Readiness()
    if exposition.multiprocess_dir():
        exposition.show_replica_processes(ReplicaProcesses(role.replica_pid, supervised=role.count > 1))
    install_log_masking()  # httpx logs every source URL at INFO, signature and password included
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
            policy=source_policy(settings),
        )
        app.state.settings = settings
        app.state.redis = redis
        app.state.storage = storage
        app.state.cluster_state = state
        # Idempotent writes (reports, audit events) that met a Redis outage, replayed once it is back.
        replay = ReplayBuffer(settings.replay_buffer_limit, readiness.redis_failed, local.replay_buffered.set)
        app.state.replay = replay
        app.state.audit = RedisAuditLog(redis, settings.audit_stream_maxlen, replay)
        app.state.bridge = PeerBridge(
            settings, state, dispatcher, probe_client, audit=app.state.audit, readiness=readiness, replay=replay
        )
        app.state.preheat = PreheatService.build(settings, redis, state, storage, app.state.audit)
        log.info(
            "supernode up: %s mode, advertise %s, seed cache %s",
            "embedded" if settings.embedded else "cluster", settings.advertise_ip, settings.seed_path,
        )
        monitor = asyncio.create_task(readiness.monitor(redis, settings.readiness_interval_seconds))
        replaying = asyncio.create_task(replay.run())
        loops = [monitor, replaying]
        multiproc = exposition.multiprocess_dir()
        shared.collector.share(Path(multiproc) / "cluster-snapshot.pickle" if multiproc else None, role.primary)
        presence = ReplicaPresence(redis, settings, role)
        heartbeat = None
        # Every worker consumes audit events and answers /api/v1/audit; the group hands each event to
        # one consumer (app.audit.writer), so each worker is a consumer of its own name.
        consumer = presence.id if role.count == 1 else f"{presence.id}-{role.index}"
        app.state.audit_runtime = AuditRuntime.start(redis, settings, consumer)
        if role.primary:  # once per replica, not per worker (app.core.process)
            loops.append(asyncio.create_task(run_gc_loop(redis, storage, settings)))
            loops.append(asyncio.create_task(run_index_prune(redis, state, settings)))
            loops.append(asyncio.create_task(
                run_gauge_loop(redis, settings.gauge_refresh_seconds, settings, WorkerProbe(dispatcher))
            ))
            await presence.start()
            heartbeat = asyncio.create_task(presence.run())
        try:
            yield
        finally:
            # Reports taken during an outage that is over by now still reach Redis before we go.
            await replay.flush(within=min(5.0, settings.shutdown_timeout_seconds))
            for loop in loops:
                loop.cancel()
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)  # it deregisters before Redis closes
            await app.state.audit_runtime.stop()
            await app.state.preheat.close()
            await dispatcher.close()
            await probe_client.aclose()
            await redis.aclose()

    app = FastAPI(title="Dragonfly supernode (HA)", version=settings.version, lifespan=lifespan)
    app.state.settings = settings
    app.state.readiness = readiness
    app.state.role = role
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
    app.include_router(ops.router)
    install_error_handlers(app)
    # Innermost of the middlewares (added first): see UnhandledErrorMiddleware.
    app.add_middleware(UnhandledErrorMiddleware, on_outage=readiness.redis_failed)
    # A middleware added later wraps the earlier ones. The /v<version> prefix is stripped first of all,
    # so metrics label the route reached; requests the allowlist turns away are counted too.
    if dfget_networks:
        app.add_middleware(DfgetAllowlistMiddleware, networks=dfget_networks)
    metrics.instrument(app, settings.version)
    app.add_middleware(VersionPrefixMiddleware)
    if settings.log_format == "json":
        app.add_middleware(RequestIdMiddleware)  # outermost: every log line of the request carries its id
    return app


def front(app: FastAPI, settings: Settings) -> ASGIApp:
    """What a server listens with: the dfget fast path, then ``app`` behind the body limits."""
    limited = BodyLimitMiddleware(app, settings.max_peer_body_bytes, settings.max_rest_body_bytes)
    return DfgetFastPath(
        limited, app.state, parse_networks(settings.dfget_allowlist), settings.metrics_peer_label,
        settings.log_format == "json", settings.max_peer_body_bytes,
        Admission(settings.dfget_concurrency, settings.dfget_queue_seconds),
    )


class _DrainingServer(uvicorn.Server):
    """uvicorn with a drain in front of its shutdown.

    On the first SIGTERM readiness turns false at once, but both ports keep serving for
    ``DF_DRAIN_SECONDS``: the load balancer's health check takes the replica out and new work goes
    elsewhere, while requests already routed here are still answered. Then uvicorn's own graceful
    shutdown runs (listeners closed, in-flight requests finished). A second SIGTERM, or SIGINT, skips
    the drain. SIGTERM is not re-raised afterwards, so a drained replica exits 0.
    """

    def __init__(self, config: uvicorn.Config, readiness: Readiness, drain_seconds: float) -> None:
        super().__init__(config)
        self.readiness = readiness
        self.drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            # A worker of a supervisor starts with SIGTERM and SIGINT blocked (app.server.supervisor): one
            # that arrived meanwhile is delivered now, to handle_exit.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
            yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        heap.settle()  # the app and its startup's objects out of every later collection (app.server.heap)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            if not self.readiness.draining and self.drain_seconds > 0 and self._loop is not None:
                # A signal handler runs between two bytecodes of the loop's thread: hand over to the loop.
                self._loop.call_soon_threadsafe(self._begin_drain)
            else:
                self.should_exit = True
            return
        super().handle_exit(sig, frame)

    def _begin_drain(self) -> None:
        self.readiness.start_drain()
        assert self._loop is not None
        self._loop.call_later(self.drain_seconds, self._end_drain)

    def _end_drain(self) -> None:
        log.info("drain over after %.1fs: closing the listeners, finishing what is in flight", self.drain_seconds)
        self.should_exit = True


async def serve(
    settings: Settings, role: ProcessRole | None = None, sockets: tuple[socket.socket, socket.socket] | None = None
) -> None:
    """One supernode process: both ports on this event loop. ``sockets`` (API, pieces): listeners the
    supervisor bound for all workers (app.server.supervisor); None: bind them here."""
    from app.download.guard import PieceBounds
    from app.download.server import start_download_server
    from app.download.thread import PieceServerThread, on_loop
    from app.limits.store import upload_share_bytes

    role = role or ProcessRole()
    readiness = Readiness()
    app = create_app(settings, readiness, role)
    lograte.install()
    # The API on uvloop (see ``run``), the piece server on its own thread with the stdlib loop, which
    # has loop.sendfile (app.download.thread).
    # Keep-alive (DF_KEEPALIVE_TIMEOUT_SECONDS, 75 s as nginx): longer than any client reuses an idle
    # connection, dfget's fasthttp 10 s (MaxIdleConnDuration) and haproxy's pooled server connections
    # (`timeout http-keep-alive 30s` in deploy/haproxy), so the replica never closes a connection a
    # client is about to reuse. Headers get DF_HEADER_TIMEOUT_SECONDS from their first byte (dfget
    # writes a request in one go), so a slow trickle cannot hold a connection (see app/api/limits.py).
    config = uvicorn.Config(
        front(app, settings), host=settings.listen, port=settings.port, log_level="info", access_log=False,
        log_config=logjson.uvicorn_log_config(settings.log_format),
        http=guarded_protocol(settings.max_header_bytes, settings.max_headers, settings.header_timeout_seconds),
        timeout_keep_alive=int(settings.keepalive_timeout_seconds),
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        backlog=listen_backlog(settings.listen_backlog),  # app.core.backlog: a herd connects at once
    )
    server = _DrainingServer(config, readiness, settings.drain_seconds)
    storage = LocalSeedStorage(settings.seed_path)

    async def upload_rate() -> int:
        # The live limit seedUploadKiBps: this replica's share (app.limits.throttle), split evenly between
        # its workers, each of which serves the uploads it accepted; 0 until started.
        bridge = getattr(app.state, "bridge", None)
        return 0 if bridge is None else await upload_share_bytes(bridge.live) // role.count

    upload_rate_here = on_loop(asyncio.get_running_loop(), upload_rate)  # asked from the piece thread
    pieces = PieceServerThread(lambda: start_download_server(
        storage, settings.listen, settings.download_port, sock=sockets[1] if sockets else None,
        draining=lambda: readiness.draining,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        bounds=PieceBounds(
            settings.max_header_bytes, settings.max_headers, settings.header_timeout_seconds,
            settings.keepalive_timeout_seconds,
        ),
        upload_rate=upload_rate_here, backlog=listen_backlog(settings.listen_backlog),
    ))
    await asyncio.to_thread(pieces.start)
    try:
        await server.serve(sockets=[sockets[0]] if sockets else None)
    finally:
        # After the API: piece uploads in flight get up to DF_SHUTDOWN_TIMEOUT_SECONDS to finish.
        await asyncio.to_thread(pieces.stop)
        log.info("supernode stopped")


def run(main: Coroutine[Any, Any, None]) -> None:
    """``main`` on a uvloop event loop: its callbacks, timers and socket I/O cost less CPU than the stdlib
    loop's on the API's many small requests (benchmarks/RESULTS.md)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def main(settings: Settings | None = None) -> None:
    """Run a replica: one process, or ``DF_WORKERS`` of them under a supervisor (app.server.supervisor;
    app/__main__.py has set up the metrics directory they share before anything was imported)."""
    settings = settings or get_settings()
    logjson.configure(settings.log_format)  # masks every record first (app.core.masking)
    count = settings.worker_count
    if count == 1:
        run(serve(settings))
        return
    from app.server.supervisor import Supervisor, listen_socket

    create_app(settings)  # a setup the workers would refuse fails here, once, before any fork
    sockets = (
        listen_socket(settings.listen, settings.port, listen_backlog(settings.listen_backlog)),
        listen_socket(settings.listen, settings.download_port, listen_backlog(settings.listen_backlog)),
    )
    log.info("replica of %d workers on ports %d and %d", count, settings.port, settings.download_port)

    def run_worker(role: ProcessRole) -> int:
        run(serve(settings, role, sockets))
        return 0

    raise SystemExit(Supervisor(count, run_worker, exposition.worker_exited).run())
