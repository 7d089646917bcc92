"""The state on a real Redis Cluster (3 masters, 3 replicas on loopback, tests/redis_cluster.py).

Every state-transition test of tests/test_state.py runs again here, on a ``redis+cluster://`` client
made by ``create_redis``: a script that touched a key outside its task's slot fails on a cluster node
("non local key" or CROSSSLOT). Then every script and multi-key command outside test_state.py, and a
check that the keys each script is called with hash to one slot (``redis.crc.key_slot``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.crc import key_slot

from app.cdn.sink import SeedOutcome
from app.cdn.storage import LocalSeedStorage
from app.core import cluster_url
from app.core.config import Settings
from app.core.redis import create_redis, is_cluster, is_outage
from app.peers.models import PeerCreate
from app.peers.service import PeerService
from app.preheat.model import PreheatRequest
from app.preheat.state import PreheatTasks
from app.preheat.store import PreheatStore
from app.scheduler.core import CDN
from app.state import schema
from app.state.listing import census, task_page
from app.state.store import ClusterState
from app.state.traffic import cluster_traffic, task_traffic, traffic_history, window_total
from app.tasks.service import TaskService
from tests.redis_cluster import RedisCluster
from tests.test_state import *  # noqa: F403  (the state tests, collected again with the fixture below)
from tests.test_state import PIECE, TID, URL, reg, seed_all, start


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster: RedisCluster) -> Settings:
    return settings.model_copy(update={"redis_url": redis_cluster.url()})


@pytest.fixture
async def cluster_redis(cluster_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(cluster_settings)
    assert is_cluster(client)
    await client.flushall()  # every master
    yield client
    await client.flushall()
    await client.aclose()


@pytest.fixture
async def state(cluster_redis: aioredis.Redis, cluster_settings: Settings) -> ClusterState:
    """Overrides tests/test_state.py's: its tests run on the cluster."""
    return ClusterState(cluster_redis, cluster_settings)


def one_slot(keys: list[str]) -> bool:
    return len({key_slot(key.encode()) for key in keys}) == 1


async def test_every_script_is_called_with_keys_of_one_slot(state: ClusterState, cluster_settings: Settings) -> None:
    now = int(time.time() * 1000)
    assert state.task_script_keys(TID, now) == [schema.task_key(TID)]
    # On one Redis the same scripts declare the global keys they write; only a cluster needs one slot.
    plain = ClusterState(aioredis.Redis(), cluster_settings)
    assert len(plain.task_script_keys(TID, now)) == 6
    # The scripts over global keys, as their callers name them.
    for keys in (
        [schema.cdn_peer_key("10.0.0.1", 8001), schema.PEERS],  # cdn_peer.lua (PeerService.ensure_cdn_peer)
        [schema.PEERS, schema.PEERS_SEEN],  # peer_record.lua (deferred by register.lua)
        [schema.preheat_key("p1"), schema.PREHEAT_INDEX],  # preheat_create.lua
        [schema.PREHEAT_INDEX, schema.preheat_key("p1")],  # task_census.lua's preheat part
    ):
        assert one_slot(keys), keys
    # Every per-task key a script builds from ARGV[1] is in KEYS[1]'s slot.
    task_keys = [schema.task_key(TID), schema.cdn_key(TID), schema.cids_key(TID), schema.dt_key(TID, "c"),
                 schema.done_key(TID, "c"), schema.run_key(TID, "c"), schema.reoffer_key(TID, "c"),
                 schema.black_key(TID, "c"), schema.holders_key(TID, 3), schema.load_key(TID, CDN),
                 schema.probe_key(TID), schema.unreach_key(TID), schema.refused_key(TID), schema.traffic_key(TID),
                 schema.task_prefix(TID) + "bs"]
    assert one_slot(task_keys)
    # The global keys are spread over other slots (else this test would prove nothing).
    assert not one_slot([schema.task_key(TID), schema.TASK_INDEX, schema.TRAFFIC_TOTAL, schema.PEERS])


async def test_deferred_global_writes_reach_the_index_the_counters_and_the_peer_list(state: ClusterState) -> None:
    epoch = await start(state, "c1", "c2")
    await seed_all(state, epoch)
    assert await state.redis.zscore(schema.TASK_INDEX, TID) is not None
    assert set(await state.redis.hgetall(schema.PEERS)) == {"vm-c1", "vm-c2"}
    assert await state.redis.zcard(schema.PEERS_SEEN) == 2
    await state.pull(TID, "c1", 700, 502, -1, "", "q")
    assert [a.piece_num for a in await state.assign(TID, "c1", "q", [(0, CDN)])] == [0]
    assert await state.piece_success(TID, "c1", 0, CDN)
    assert await state.back_source(TID, "c3", 0)  # nothing to count: a plain integer reply
    assert await state.back_source(TID, "c2", 1000)
    assert not await state.back_source(TID, "c2", 1000)  # once per cid
    counted = await task_traffic(state.redis, TID)
    assert (counted.seed, counted.source) == (PIECE, 1000)
    assert await cluster_traffic(state.redis) == counted
    assert window_total(await traffic_history(state.redis, 5)) == counted
    # The listings read the task hashes of every slot.
    assert await task_page(state.redis, state.settings.task_ttl_seconds, None, 0, 10) == (1, [TID])
    assert await task_page(state.redis, state.settings.task_ttl_seconds, "SUCCESS", 0, 10) == (1, [TID])
    assert await task_page(state.redis, state.settings.task_ttl_seconds, "FAILED", 0, 10) == (0, [])
    counts = await census(state.redis, state.settings.task_ttl_seconds)
    assert dict(counts.tasks) == {"SUCCESS": 1}


async def test_peers_preheats_and_task_deletion_on_the_cluster(state: ClusterState, tmp_path: Path) -> None:
    peers = PeerService(state.redis, state.settings)
    cdn_id = await peers.ensure_cdn_peer("host")
    assert await peers.ensure_cdn_peer("host") == cdn_id  # one record per advertise address
    made = await peers.create(PeerCreate(ip="10.1.1.1", hostname="h", port=40001, version="1.0.6"))
    assert (await peers.get(made) or {}).get("IP") == "10.1.1.1"
    assert await peers.delete(made) and not await peers.delete(made)
    assert await peers.get(cdn_id) is not None

    store = PreheatStore(state.redis)
    pid, created = await store.create(PreheatRequest(type="file", url=URL), "tests", "legacy")
    assert created.epoch == 1 and await store.claim(pid, 1)
    assert await store.update(pid, 1, [], status="SUCCESS")
    assert [r.id for r in await store.list_records()] == [pid]
    counts = await census(state.redis, state.settings.task_ttl_seconds)
    assert dict(counts.preheats) == {"SUCCESS": 1}
    assert await store.delete(pid) and await store.list_records() == []

    preheats = PreheatTasks(state)
    out = await preheats._run_ensure(TID, URL, URL, "", {}, 20971520, 5.0)
    assert (out.result, out.seed_epoch) == ("ok", 1)
    assert await state.redis.zscore(schema.TASK_INDEX, TID) is not None  # deferred by ensure_task.lua
    assert await preheats.acquire_slot("p:1:t", 1, 10) and not await preheats.acquire_slot("p:2:t", 1, 10)
    await preheats.release_slot("p:1:t")

    # A dfget joins the seed the preheat started (epoch 1); the seed scripts on the cluster.
    assert (await state.register(reg("c1"), None, 0, 0)).result == "ok"
    assert await state.seed_heartbeat(TID, 1, "owner")
    assert await state.seed_pieces(TID, 1, 0, ["m0:1"], 1, "owner") == 1
    failed = SeedOutcome(success=False, file_length=-1, raw_length=-1, real_md5="", piece_total=0, error="gone",
                         reason="not_found")
    assert await state.seed_finished(TID, 1, failed, "owner") == 1
    assert await state.unreachable_reason(TID) == "gone"
    assert await state.set_task_down_link(TID, 100) and await state.service_down(TID, "c1")

    tasks = TaskService(state.redis, LocalSeedStorage(tmp_path / "seed"), state.settings.task_ttl_seconds)
    assert await tasks.delete(TID, full=False)
    assert [key async for key in state.redis.scan_iter(match=f"{schema.task_prefix(TID)}*")] == []
    assert await state.redis.zscore(schema.TASK_INDEX, TID) is None


def test_cluster_urls_and_the_broker_rule() -> None:
    parsed = cluster_url.parse("redis+cluster://ops:p%40ss@10.0.0.1:7000,10.0.0.2?socket_timeout=0.5")
    assert parsed.hosts == [("10.0.0.1", 7000), ("10.0.0.2", 6379)]
    assert (parsed.username, parsed.password, parsed.options) == ("ops", "p@ss", {"socket_timeout": 0.5})
    assert "p@ss" not in repr(parsed)  # a logged settings object never shows it
    with pytest.raises(ValueError, match="database 2"):
        cluster_url.parse("redis+cluster://10.0.0.1:7000/2")
    with pytest.raises(ValueError, match="bad port"):
        cluster_url.parse("redis+cluster://10.0.0.1:x")
    with pytest.raises(ValidationError, match="Kombu has no Redis Cluster transport"):
        Settings(redis_url="redis+cluster://10.0.0.1:7000", broker_url="redis+cluster://10.0.0.1:7000")
    Settings(redis_url="redis+cluster://10.0.0.1:7000", broker_url="redis://10.0.0.9:6379/1")


async def test_a_killed_node_is_an_outage_then_its_slots_move(
    redis_cluster: RedisCluster, cluster_settings: Settings
) -> None:
    """The last test of the module: it leaves the cluster with one master fewer replicated."""
    client = create_redis(cluster_settings.model_copy(update={"redis_socket_timeout_seconds": 0.5}))
    key = schema.task_key("outage-probe")
    try:
        await client.set(key, "1")
        victim = redis_cluster.master_for(key)
        victim.kill()
        with pytest.raises(Exception) as failed:
            await client.get(key)
        assert is_outage(failed.value), repr(failed.value)
        await asyncio.to_thread(redis_cluster.wait_promoted, victim, key)
        for _ in range(100):  # the client re-reads the slot map on its next command
            try:
                assert await client.get(key) == "1"
                break
            except Exception as exc:
                assert is_outage(exc), repr(exc)
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the promoted replica never answered")
    finally:
        await client.aclose()
