"""Redis connections: a real server (plain or Sentinel) in cluster mode, an in-process
Redis-compatible server in embedded mode. Both run the same Lua scripts."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from app.core.config import Settings

_embedded_server: Any = None


def create_redis(settings: Settings) -> aioredis.Redis:
    if settings.embedded:
        return _embedded_redis(settings)
    url = settings.redis_url
    if url.startswith("redis+sentinel://"):
        return _sentinel_redis(url, settings.redis_sentinel_master, settings.redis_max_connections)
    # A blocking pool: past the bound a request waits for a connection (well inside dfget's 5 s) instead
    # of failing. ``?max_connections=`` in the URL still wins, as redis-py documents.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, decode_responses=True, health_check_interval=30, retry=_blip_retry(),
        max_connections=settings.redis_max_connections, timeout=settings.redis_pool_timeout_seconds,
    )
    return aioredis.Redis.from_pool(pool)


def _blip_retry() -> Retry:
    """Ride out a Redis blip (failover, dropped connections) within dfget's 5 s budget.

    Every script is safe to run twice: a reply lost on a dropped connection is recomputed the same way.
    """
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=6)


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


def _sentinel_redis(url: str, default_master: str, max_connections: int) -> aioredis.Redis:
    """``redis+sentinel://[:password@]host1:26379,host2:26379/<db>?master=<name>``."""
    parsed = urlparse(url)
    hosts = []
    for item in parsed.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    query = parse_qs(parsed.query)
    master = query.get("master", [default_master])[0]
    db = int(parsed.path.strip("/") or 0)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts, password=parsed.password, db=db, decode_responses=True, retry=_blip_retry()
    )
    client: aioredis.Redis = sentinel.master_for(master, max_connections=max_connections)
    return client


# Errors that mean "the state store cannot be used right now" rather than "this request is wrong":
# a refused or dropped connection, a timeout, a Redis still loading its AOF, a demoted master that
# refuses writes after a failover, no master known to the sentinels, or every pooled connection busy.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes BusyLoadingError, MaxConnectionsError, MasterNotFoundError
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # includes MasterDownError
    ConnectionError,  # OSError family raised below redis-py (resets, refusals during connect)
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis is unreachable or unusable for now (so: wait and try again)."""
    return isinstance(exc, _OUTAGE_ERRORS)
