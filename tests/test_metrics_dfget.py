"""The per-replica counters fed by what dfget sends, on a real in-process supernode: /task/metrics
reports counted as Go counted them (and refused bodies not at all, still answered code 1), the peer
label off by default and filled when enabled, registrations and their failures, Redis round trips per
request, and this replica's own readiness gauges."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.core.config import Settings
from app.core.jobs import CeleryJobs, InProcessJobs
from app.observability import dfget, shared
from app.observability.workers import WorkerProbe
from app.protocol.taskid import task_id
from app.state import schema
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode
from tests.sources import SourceServer
from tests.test_bridge import registration, wait_status

JSON = {"content-type": "application/json;charset=utf-8"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def report(call_system: str, **fields: Any) -> bytes:
    body = {"IP": "127.0.0.5", "callSystem": call_system, "cID": "127.0.0.5-9-1.000", "duration": 12.5,
            "fileLength": 1000, "port": 15002, "success": True, "taskId": "b" * 64} | fields
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


async def test_task_reports_are_counted_as_go_counted_them(settings: Settings, redis: Redis) -> None:
    cs = f"cs-{uuid.uuid4().hex[:8]}"
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        # Counters live for the whole process: tests run before this one (in this pytest-xdist worker)
        # may have left series of their own, so the refused bodies are judged by what they changed.
        before = samples((await http.get("/metrics")).text)
        bodies = [
            report(cs),  # success: duration, size and count
            report(cs, fileLength=500, duration=700.0),  # past the last bucket
            report(cs, success=None, fileLength=None, backsourceReason="1003"),  # failed, refused back-source
            # Refused by Go's validation or decoding: never counted, still answered code 1 (no retry).
            report(cs, port=80), report(cs, callSystem=""), report(cs, success="yes"), report(cs, duration=-1),
            b"[1, 2]", b"{not json", report(cs).replace(b'"fileLength": 1000', b'"fileLength": 1' + b"0" * 400),
            report(cs).replace(b'"duration": 12.5', b'"duration": 1e400'), report(cs, callSystem="c" * 257),
        ]
        answers = [await http.post(path, content=body, headers=JSON)
                   for path, body in zip(["/task/metrics", "/v1.0.6/task/metrics"] * 7, bodies, strict=False)]
        found = samples((await http.get("/metrics")).text)
    assert [a.json() for a in answers] == [{"code": 1}] * len(bodies)
    labels = {"callsystem": cs, "peer": ""}  # the peer label is off by default: kept, empty
    assert get(found, "dragonfly_dfget_download_total", **labels) == 3
    assert get(found, "dragonfly_dfget_download_size_bytes_total", **labels) == 1500
    assert get(found, "dragonfly_dfget_download_duration_seconds_count", **labels) == 2
    assert get(found, "dragonfly_dfget_download_duration_seconds_sum", **labels) == 712.5
    assert get(found, "dragonfly_dfget_download_duration_seconds_bucket", **labels, le="30.0") == 1
    assert get(found, "dragonfly_dfget_download_duration_seconds_bucket", **labels, le="600.0") == 1
    assert get(found, "dragonfly_dfget_download_duration_seconds_bucket", **labels, le="+Inf") == 2
    assert get(found, "dragonfly_dfget_download_failed_total", **labels, reason="1003") == 1
    # The body with an empty callSystem (refused by Go) counted nothing under callsystem="".
    unnamed = {key for key in found if key[0].startswith("dragonfly_dfget") and dict(key[1]).get("callsystem") == ""}
    assert {key: found[key] for key in unnamed} == {key: before.get(key, 0.0) for key in unnamed}


async def test_the_peer_label_is_the_dfget_ip_when_enabled(settings: Settings, redis: Redis) -> None:
    cs = f"cs-{uuid.uuid4().hex[:8]}"
    labelled = settings.model_copy(update={"metrics_peer_label": True})
    async with live_supernode(labelled) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        await http.post("/task/metrics", content=report(cs), headers=JSON)
        pull = await http.get("/peer/task", params={"taskId": "c" * 64, "srcCid": "127.0.0.77-5-1.000"})
        found = samples((await http.get("/metrics")).text)
    assert pull.status_code == 200
    assert get(found, "dragonfly_dfget_download_total", callsystem=cs, peer="127.0.0.5") == 1
    assert get(found, "dragonfly_dfget_download_total", callsystem=cs, peer="") == 0
    assert get(found, "dragonfly_supernode_schedule_duration_milliseconds_count", peer="127.0.0.77") >= 1


async def test_registrations_and_their_failures(settings: Settings, redis: Redis) -> None:
    cs = f"cs-{uuid.uuid4().hex[:8]}"
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        before = samples((await http.get("/metrics")).text)
        bad_ip = registration("http://127.0.0.1:9/x") | {"ip": "not-an-ip", "callSystem": cs}
        refused = registration("http://169.254.169.254/latest/meta-data/") | {"callSystem": cs}
        answers = [(await http.post("/peer/registry", json=body)).json() for body in (bad_ip, refused)]
        after = samples((await http.get("/metrics")).text)
    assert all(a["code"] != 200 for a in answers), answers
    assert get(after, "dragonfly_supernode_dfgettasks_registered_total", callsystem=cs) == 2
    assert get(after, "dragonfly_supernode_dfgettasks_failed_total", callsystem=cs) == 2
    assert (get(after, "dragonfly_supernode_tasks_registered_total")
            - get(before, "dragonfly_supernode_tasks_registered_total")) == 2
    assert (get(after, "dragonfly_supernode_source_refusals_total", reason="metadata")
            - get(before, "dragonfly_supernode_source_refusals_total", reason="metadata")) >= 1


async def test_redis_round_trips_are_counted_per_request(settings: Settings, redis: Redis) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        before = samples((await http.get("/metrics")).text)
        for _ in range(3):
            await http.get("/_ping")
            pull = await http.get("/peer/task", params={"srcCid": "127.0.0.1-1-1.000", "dstCid": "", "range": "",
                                                        "result": "500", "status": "700", "taskId": "d" * 64})
            assert pull.json()["code"] != 501, pull.text  # parsed: it reached the state
        after = samples((await http.get("/metrics")).text)
        found = after

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    # /_ping touches no Redis; a pull does: its script call, and on the first one the live limits' read and
    # the connection's setup.
    assert delta("dragonfly_supernode_redis_round_trips_count", handler="/_ping") == 3
    assert delta("dragonfly_supernode_redis_round_trips_bucket", handler="/_ping", le="0.0") == 3
    assert delta("dragonfly_supernode_redis_round_trips_count", handler="/peer/task") == 3
    pull_trips = delta("dragonfly_supernode_redis_round_trips_sum", handler="/peer/task")
    assert 3 <= pull_trips <= 30
    assert delta("dragonfly_supernode_redis_round_trips_bucket", handler="/peer/task", le="0.0") == 0
    # This replica's own condition.
    assert get(found, "dragonfly_supernode_ready") == 1
    assert get(found, "dragonfly_supernode_draining") == 0
    assert get(found, "dragonfly_supernode_replay_buffered") == 0


async def test_the_worker_probe_counts_the_workers_that_answer(broker_url: str) -> None:
    """A real broker with no worker listening: 0 (the alert's case); in-process seeding: no gauge."""

    async def never(key: str, epoch: int) -> None:
        return None

    jobs = CeleryJobs(broker_url, "workers.tasks.seed", "test")
    try:
        assert await WorkerProbe(jobs).count() == 0
    finally:
        await jobs.close()
    assert await WorkerProbe(InProcessJobs(never)).count() is None


async def test_seed_job_counts_are_cluster_wide_and_deletes_count_as_task_gc(settings: Settings, redis: Redis) -> None:
    """A download, a cache hit (the task deleted, its seed files kept) and a failed download: the legacy
    cdn_* counters, kept in Redis by whichever process seeds; the delete counts in gc_tasks_total."""
    fast = settings.model_copy(update={"gauge_refresh_seconds": 0.05})
    auth = {"Authorization": f"Bearer {TEST_TOKEN}"}
    async with SourceServer() as source, live_supernode(fast) as sn, \
            httpx.AsyncClient(base_url=sn.api, timeout=10, headers=auth) as http:
        source.add("f.bin", os.urandom(300_000))
        source.add("cut.bin", os.urandom(6 * 1024 * 1024), truncate=True)
        url, cut = source.url("f.bin"), source.url("cut.bin")
        before = samples((await http.get("/metrics")).text)
        assert (await http.post("/peer/registry", json=registration(url))).json()["code"] == 200
        await wait_status(redis, task_id(url), "SUCCESS")
        assert (await http.delete(f"/api/v1/tasks/{task_id(url)}")).status_code == 200  # files stay
        assert (await http.post("/peer/registry", json=registration(url))).json()["code"] == 200
        await wait_status(redis, task_id(url), "SUCCESS")
        assert (await http.post("/peer/registry", json=registration(cut))).json()["code"] == 200
        await wait_status(redis, task_id(cut), "FAILED")
        wanted = {"trigger": 3, "download": 2, "cache_hit": 1, "download_failed": 1, "trigger_failed": 1}
        for _ in range(200):
            found = samples((await http.get("/metrics")).text)
            seen = {k: get(found, f"dragonfly_supernode_cdn_{k}_total") for k in wanted}
            if seen == wanted:
                break
            await asyncio.sleep(0.05)
    assert seen == wanted
    assert get(found, "dragonfly_supernode_gc_tasks_total") - get(before, "dragonfly_supernode_gc_tasks_total") == 1


def test_free_text_labels_have_a_bounded_number_of_values() -> None:
    budget = dfget._Budget(3)
    assert [budget(v) for v in ("a", "b", "a", "c", "d", "e", "b")] == ["a", "b", "a", "c", "other", "other", "b"]


async def test_dfgettasks_are_counted_by_their_own_or_their_tasks_call_system(redis: Redis) -> None:
    """As register.lua writes them (one dfget task keeps its own callSystem, an older record has none),
    plus a cid whose record expired: counted in Redis, one script call per task."""
    tid = "e" * 64
    await redis.hset(schema.task_key(tid), mapping={"cdnStatus": "SUCCESS", "callSystem": "first\x1fodd"})
    await redis.sadd(schema.cids_key(tid), "a", "b", "c", "gone")
    await redis.hset(schema.dt_key(tid, "a"), mapping={"status": "SUCCESS", "callSystem": "mine"})
    await redis.hset(schema.dt_key(tid, "b"), mapping={"status": "RUNNING"})
    await redis.hset(schema.dt_key(tid, "c"), mapping={"status": "RUNNING", "callSystem": ""})
    await redis.zadd(schema.TASK_INDEX, {tid: 1, "f" * 64: 2})  # the second one's keys expired
    await redis.hset(schema.PEERS, mapping={"p1": '{"IP":"10.0.0.1"}', "p2": '{"IP":"10.0.0.1"}', "p3": "{}"})
    now = await shared.snapshot(redis, peer_label=False, task_series=0)
    assert now.dfgettasks == {("mine", "SUCCESS"): 1, ("first\x1fodd", "RUNNING"): 2}
    assert now.peers == {"": 3}
    labelled = await shared.snapshot(redis, peer_label=True, task_series=0)
    assert labelled.peers == {"10.0.0.1": 2, "": 1}
