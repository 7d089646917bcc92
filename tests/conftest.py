"""Shared fixtures. Tests use the real Redis on loopback, in a db number of their own, and the real
PostgreSQL, in a database of their own (``pg_db``)."""

from __future__ import annotations

import atexit
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from app.core.config import Settings
from tests.cluster import REDIS_BASE, TEST_TOKEN
from tests.postgres import fresh_database


def _claim_db_pair() -> int:
    """A (state, broker) pair of Redis dbs that no concurrent test run is using.

    Runs flush their dbs, so two runs on one Redis (CI next to a developer, or parallel sessions)
    must never share them. Pairs (2,3) .. (14,15) are claimed with a lease key in db 0.
    """
    if "DF_TEST_REDIS_DB" in os.environ:
        return int(os.environ["DF_TEST_REDIS_DB"])
    admin = sync_redis.Redis.from_url(f"{REDIS_BASE}/0")
    for state_db in range(2, 15, 2):
        key = f"df-tests:db-lease:{state_db}"
        if admin.set(key, os.getpid(), nx=True, ex=3600):
            atexit.register(admin.delete, key)
            return state_db
    raise RuntimeError("every test Redis db pair is leased; set DF_TEST_REDIS_DB to force one")


STATE_DB = _claim_db_pair()
BROKER_DB = STATE_DB + 1


@pytest.fixture
def redis_url() -> str:
    return f"{REDIS_BASE}/{STATE_DB}"


@pytest.fixture
def broker_url() -> str:
    return f"{REDIS_BASE}/{BROKER_DB}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, home=tmp_path / "home", seed_dir=tmp_path / "seed", advertise_ip="127.0.0.1",
        piece_lease_seconds=30, seed_lease_seconds=5, source_allowlist="127.0.0.0/8",
        api_tokens=f"tests:{TEST_TOKEN}",
    )


@pytest.fixture
async def pg_db() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test; yields its URL in the DF_DATABASE_URL form."""
    async for url in fresh_database():
        yield url


# `make test` runs two pytest-xdist workers that take whole files (--dist loadfile) in collection order.
# A long file collected late would leave one worker running it alone at the end, so the files that take
# minutes go first; the others keep their order. In a plain serial run the order changes nothing.
_LONGEST_FIRST = (
    "test_image.py", "test_ha_redis.py", "test_seed_resume.py", "test_cluster.py", "test_dashboard_browser.py",
    "test_metrics_legacy.py", "test_redis_failover.py", "test_embedded.py", "test_ha_rolling.py",
    "test_availability.py", "test_sentinel_broker.py", "test_redis_cluster.py", "test_workers.py", "test_audit.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests of one file stay together and in their order
