"""Redis connections: a real server (plain, Sentinel or a Redis Cluster) in cluster mode, an
in-process Redis-compatible server in embedded mode. All run the same Lua scripts.

In cluster mode every command has a reply deadline (``DF_REDIS_SOCKET_TIMEOUT_SECONDS``) and a short
retry that rides one dropped connection, nothing longer: a longer outage reaches the request handlers,
which know what to answer dfget meanwhile (``is_outage`` below). Behind Sentinel, every (re)connection
asks the sentinels where the master is and checks the answer with ROLE, so that no connection keeps
talking to a dead or demoted master after a failover. On a Redis Cluster, redis-py's cluster client
follows MOVED/ASK itself and re-reads the slot map after a connection error or CLUSTERDOWN, within the
same short retry (``_ClusterRedis``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.utils import str_if_bytes

from app.core import cluster_url, sentinel_url
from app.core.config import Settings

_embedded_server: Any = None

# Idle connections are PINGed before use after this long, so that one dropped while idle (a restart, a
# load balancer's idle timeout) is replaced before a request's command, not after it failed.
_HEALTH_CHECK_SECONDS = 30
# How often a Sentinel pool asks the sentinels where the master is, besides every (re)connect.
_SENTINEL_REFRESH_SECONDS = 1.0
# The version each connection names in CLIENT SETINFO, given once: left out, redis-py reads it from the
# package metadata for every new connection (0.6 ms of CPU each, hundreds per burst of requests, and a
# few per seed job, whose worker makes a client per job).
_LIB = {"lib_version": redis.__version__}


def create_redis(settings: Settings) -> aioredis.Redis:
    if settings.embedded:
        return _embedded_redis(settings)
    url = settings.redis_url
    if url.startswith("redis+sentinel://"):
        return _sentinel_redis(url, settings)
    if cluster_url.is_cluster(url):
        return _cluster_redis(url, settings)
    # A blocking pool: past the bound a request waits for a connection (well inside dfget's 5 s) instead
    # of failing. ``?max_connections=`` (or ``?socket_timeout=``) in the URL still wins, as redis-py
    # documents.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, decode_responses=True, health_check_interval=_HEALTH_CHECK_SECONDS, retry=_blip_retry(),
        max_connections=settings.redis_max_connections, timeout=settings.redis_pool_timeout_seconds,
        **_timeouts(settings), **_LIB,
    )
    return aioredis.Redis.from_pool(pool)


def _timeouts(settings: Settings) -> dict[str, float]:
    return {
        "socket_timeout": settings.redis_socket_timeout_seconds,
        "socket_connect_timeout": settings.redis_connect_timeout_seconds,
    }


def _blip_retry() -> Retry:
    """Ride out one dropped connection, and nothing longer.

    A command whose connection Redis closed (a restart, a failover, an idle connection cut) is worth a
    few more tries on a fresh connection; every script is safe to run twice, as a reply lost on a
    dropped connection is recomputed the same way. At most 3 retries and 0.25 s of sleep in all. A
    longer outage is not hidden here: the request handlers decide what dfget gets meanwhile (602, 609,
    a buffered report), and a retry of seconds here would push a registration past dfget's 5 s.

    Timeouts are not retried: a Redis that did not answer within the socket timeout will not answer the
    next try either, and each try would cost another socket timeout.
    """
    return Retry(
        ExponentialWithJitterBackoff(base=0.025, cap=0.1), retries=3,
        supported_errors=(redis_errors.ConnectionError,),
    )


def _embedded_redis(settings: Settings) -> aioredis.Redis:
    # fakeredis runs real Lua (via lupa) with Redis semantics; one server object per process so that
    # every client in the process (API, seeder) sees the same data. Its connections come from redis-py's
    # pool, bounded like a real server's (a swarm of 200 dfgets overflowed the default of 100).
    import fakeredis

    global _embedded_server
    if _embedded_server is None:
        _embedded_server = fakeredis.FakeServer()
    client: aioredis.Redis = fakeredis.FakeAsyncRedis(
        server=_embedded_server, decode_responses=True, connection_pool_class=aioredis.BlockingConnectionPool,
        max_connections=settings.redis_max_connections,
    )
    pool = client.connection_pool
    if isinstance(pool, aioredis.BlockingConnectionPool):
        pool.timeout = settings.redis_pool_timeout_seconds  # not among the options fakeredis passes on
    return client


def _sentinel_redis(url: str, settings: Settings) -> aioredis.Redis:
    """``redis+sentinel://[:password@]host1:26379,host2:26379/<db>?master=<name>`` (app.core.sentinel_url)."""
    address = sentinel_url.parse(url)
    hosts, db, master = address.hosts, address.db, address.master or settings.redis_sentinel_master
    sentinel = _Sentinels(
        hosts,
        # The sentinel queries get the same deadlines and no retry of their own: a dead sentinel is
        # skipped for the next one at once (redis-py's default retry would back off for seconds on it).
        sentinel_kwargs={**_timeouts(settings), "retry": Retry(NoBackoff(), 0)},
        password=address.password, db=db, decode_responses=True, retry=_blip_retry(),
        health_check_interval=_HEALTH_CHECK_SECONDS, **_timeouts(settings), **_LIB,
    )
    client: aioredis.Redis = sentinel.master_for(
        master, connection_pool_class=_SentinelPool, connection_class=_SentinelConnection,
        max_connections=settings.redis_max_connections, timeout=settings.redis_pool_timeout_seconds,
    )
    return client


class _Sentinels(Sentinel):
    """The sentinels, asked one discovery at a time.

    redis-py moves the sentinel that answered to the front of its list with a swap across an await:
    concurrent discoveries (every connection of a pool reconnecting after a failover) corrupt the list,
    duplicating one sentinel and losing another for good (seen in the failover tests). Here concurrent
    callers share the discovery in flight, which also spares the sentinels a query per connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
        self._discovery: dict[str, asyncio.Future[tuple[str, int]]] = {}

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        running = self._discovery.get(service_name)
        if running is None or running.done():
            running = self._discovery[service_name] = asyncio.ensure_future(self._ask(service_name))
            # Retrieved even when every caller was cancelled, so that no "never retrieved" warning.
            running.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Shielded: one caller's cancellation (a request's deadline) must not cancel the others'.
        return await asyncio.shield(running)

    async def _ask(self, service_name: str) -> tuple[str, int]:
        errors = []
        for sentinel in list(self.sentinels):
            try:
                masters: Any = await sentinel.sentinel_masters()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                errors.append(repr(exc))
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                # The one that answered is asked first next time (no await in between: atomic).
                self.sentinels.remove(sentinel)
                self.sentinels.insert(0, sentinel)
                ip = self._force_master_ip if self._force_master_ip is not None else state["ip"]
                return str(ip), int(state["port"])
        raise MasterNotFoundError(f"no sentinel names a usable master {service_name!r}: {'; '.join(errors)}")


class _SentinelConnection(SentinelManagedConnection):
    """A connection to the master that asks the sentinels where it is on every (re)connect."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # A command retried after its connection dropped lands here disconnected, and redis-py reconnects
        # it (Connection.connect_check_health) to the address it had: after a failover, the dead or
        # demoted old master. Seen: a seed write failing on the dead master. Ask the sentinels instead;
        # one attempt, since the command's own retry loops.
        if not self.is_connected:
            await self.connect_to(await self.connection_pool.get_master_address())
        await super().send_packed_command(command, check_health)

    async def connect_to(self, address: tuple[str, int]) -> None:
        await super().connect_to(address)  # type: ignore[no-untyped-call]
        # What the sentinels named may be stale (a sentinel that missed the failover, an old master
        # restarted before it is demoted): check the role, as Sentinel's client guidelines ask. Once per
        # connection, and connections are pooled.
        await self.send_command("ROLE", check_health=False)
        reply = await self.read_response()
        role = str_if_bytes(reply[0]) if reply else "?"
        if role != "master":
            await self.disconnect()
            raise redis_errors.ConnectionError(f"{address[0]}:{address[1]} is a {role}, not the master")


class _SentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool, bounded and queueing like the plain one, and never handing out a
    connection that still points at a master the sentinels no longer announce.

    redis-py only asks the sentinels when a connection (re)connects. A master that is demoted alive (a
    forced failover, a partition) keeps its connections, and the sentinels make it a replica only ~10 s
    later: writes that land on it meanwhile are lost when it resyncs. So the pool also asks the
    sentinels once a second, in the background (a hung sentinel must not hold a request).
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._asked_at = 0.0
        self._asking: asyncio.Task[None] | None = None

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        self._ask_sentinels_now_and_then()
        if (
            connection.is_connected and self.master_address is not None
            and (getattr(connection, "host", None), getattr(connection, "port", None)) != self.master_address
        ):
            # Connected to the master before the last failover (the pool then drops only the idle
            # connections): reconnect it through the sentinels.
            await connection.disconnect()
        await super().ensure_connection(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        try:
            await super().disconnect(inuse_connections)
        finally:
            if inuse_connections:  # the client closes: so do its sentinel connections and refresh
                if self._asking is not None and self._asking is not asyncio.current_task():
                    self._asking.cancel()
                    await asyncio.gather(self._asking, return_exceptions=True)
                await self.sentinel_manager.aclose()

    def _ask_sentinels_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._asked_at < _SENTINEL_REFRESH_SECONDS or (self._asking is not None and not self._asking.done()):
            return
        self._asked_at = now
        self._asking = asyncio.create_task(self._ask_sentinels(), name="redis-sentinel-refresh")

    async def _ask_sentinels(self) -> None:
        # No master known right now (mid-failover): keep the last one; connections fail and reconnect.
        with contextlib.suppress(redis_errors.RedisError, OSError):
            await self.get_master_address()  # type: ignore[no-untyped-call]  # a new address drops idle ones


def _cluster_redis(url: str, settings: Settings) -> aioredis.Redis:
    """``redis+cluster://[user:password@]host1:port1,host2:port2[?option=value]`` (app.core.cluster_url)."""
    address = cluster_url.parse(url)
    options: dict[str, Any] = {
        "decode_responses": True, "health_check_interval": _HEALTH_CHECK_SECONDS,
        "max_connections": settings.redis_max_connections, **_timeouts(settings), **_LIB, **address.options,
    }
    client = _ClusterRedis(
        startup_nodes=[ClusterNode(host, port) for host, port in address.hosts],
        username=address.username, password=address.password,
        # The client-level retry (a fresh slot map, another node) rides one blip: 3 tries, as _blip_retry.
        retry=Retry(ExponentialWithJitterBackoff(base=0.025, cap=0.1), retries=3),
        pool_timeout=settings.redis_pool_timeout_seconds, **options,
    )
    # Typed as the plain client: the commands the state uses are the same, and callers never branch on
    # the class except where a cluster needs another form (is_cluster).
    return client  # type: ignore[return-value]


def is_cluster(redis: object) -> bool:
    """Whether ``redis`` talks to a Redis Cluster (keys of different slots never meet in one command)."""
    return isinstance(redis, RedisCluster)


class _ClusterRedis(RedisCluster):
    """redis-py's cluster client with the plain client's policies.

    * Timeouts are not retried (see ``_blip_retry``): a node that did not answer within the socket
      timeout will not answer the next try either. A refused or dropped connection, CLUSTERDOWN (a
      failover in progress) and an uncovered slot are retried, each try on a fresh slot map, so a
      master that died minutes ago is left behind but an election that takes seconds is not waited out.
    * Bounded and queueing: redis-py's cluster pool fails at once past ``max_connections`` per node,
      where the plain pool waits. Here at most ``max_connections`` commands and pipelines are in flight
      in the process, and the next waits up to ``pool_timeout`` (then MaxConnectionsError, an outage).
    """

    # redis-py's tuple without TimeoutError (its type names the 4-tuple it ships).
    ERRORS_ALLOW_RETRY = (redis_errors.ConnectionError, redis_errors.ClusterDownError,  # type: ignore[assignment]
                          redis_errors.SlotNotCoveredError)

    def __init__(self, *args: Any, pool_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(kwargs["max_connections"])
        self._pool_timeout = pool_timeout

    @contextlib.asynccontextmanager
    async def in_flight(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise redis_errors.MaxConnectionsError("no free Redis connection") from None
        try:
            yield
        finally:
            self._slots.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.in_flight():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise redis_errors.RedisClusterException("shard_hint is not supported in cluster mode")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's own pipeline()


class _ClusterPipeline(ClusterPipeline):
    """A pipeline that holds one of its client's in-flight places while it runs."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, _ClusterRedis)
        async with client.in_flight():
            return await super().execute(raise_on_error, allow_redirections)


class OutageLog:
    """One WARNING when a background loop's calls start failing, one INFO when they work again.

    A loop retrying through a 10 s Redis outage (a failover, a restart) must neither die nor log a
    traceback per attempt. Errors that are not an outage (a bug) get their traceback, once per streak.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.since: float | None = None  # monotonic time of the streak's first failure
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.since is not None:
            return
        self.since = time.monotonic()
        if is_outage(exc):
            self.logger.warning("%s failed, Redis unavailable (%s: %s); retrying until it answers",
                                self.what, type(exc).__name__, str(exc)[:200])
        else:
            self.logger.warning("%s failed; retrying", self.what, exc_info=exc)

    def succeeded(self) -> None:
        if self.since is None:
            return
        self.logger.info("%s works again after %.1f s and %d failed attempts",
                         self.what, time.monotonic() - self.since, self.failures)
        self.since = None
        self.failures = 0


# Errors that mean "the state store cannot be used right now" rather than "this request is wrong":
# a refused or dropped connection, a timeout, a Redis still loading its AOF, a demoted master that
# refuses writes after a failover, no master known to the sentinels, every pooled connection busy, or
# (Redis Cluster) a cluster that is down or mid-failover, a slot no node serves yet.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes BusyLoadingError, MaxConnectionsError, MasterNotFoundError
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # includes MasterDownError
    redis_errors.SlotNotCoveredError,  # a slot map read while a failover was under way
    ConnectionError,  # OSError family raised below redis-py (resets, refusals during connect)
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis is unreachable or unusable for now (so: wait and try again)."""
    return isinstance(exc, _OUTAGE_ERRORS)
