"""A replica's Redis connections are bounded and queue instead of failing: a swarm larger than the
pool (redis-py's default pool refuses the 101st concurrent command) must get answers, not code 500."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.config import Settings
from app.core.redis import create_redis


def embedded(tmp_path: Path, **update: object) -> Settings:
    return Settings(redis_url="", home=tmp_path / "home", advertise_ip="127.0.0.1").model_copy(update=update)


@pytest.mark.parametrize("mode", ["embedded", "cluster"])
async def test_more_concurrent_commands_than_connections_wait_for_one(
    mode: str, tmp_path: Path, settings: Settings
) -> None:
    base = embedded(tmp_path) if mode == "embedded" else settings
    client = create_redis(base.model_copy(update={"redis_max_connections": 8}))
    try:
        # All 300 tasks ask for a connection before the first reply comes back: a pool that refuses
        # instead of queueing fails most of them with MaxConnectionsError.
        script = "return ARGV[1]"
        answers = await asyncio.gather(*(client.eval(script, 0, str(i)) for i in range(300)))
        assert answers == [str(i) for i in range(300)]
        assert client.connection_pool.max_connections == 8
    finally:
        await client.aclose()


async def test_default_pool_is_far_above_redis_py_default(tmp_path: Path) -> None:
    client = create_redis(embedded(tmp_path))
    try:
        answers = await asyncio.gather(*(client.ping() for _ in range(400)))
        assert all(answers)
        assert client.connection_pool.max_connections == 512
    finally:
        await client.aclose()


async def test_a_connection_that_never_frees_up_fails_after_the_pool_timeout(settings: Settings) -> None:
    client = create_redis(settings.model_copy(update={"redis_max_connections": 1, "redis_pool_timeout_seconds": 0.2}))
    try:
        held = await client.connection_pool.get_connection()
        with pytest.raises(RedisConnectionError):
            await client.ping()
        await client.connection_pool.release(held)
        assert await client.ping()
    finally:
        await client.aclose()
