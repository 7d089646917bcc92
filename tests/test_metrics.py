"""/metrics carries the legacy supernode's HTTP metrics (METRICS-AND-HELM.md §5): names, labels
``code``/``handler``, buckets; the handler is the route reached, /v1 prefix or not. And cluster-wide
gauges computed from Redis."""

from __future__ import annotations

import asyncio
import os

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.core.config import Settings
from app.protocol.taskid import task_id
from app.state.schema import PREHEAT_INDEX, TASK_INDEX, preheat_key, task_key
from tests.live import live_supernode
from tests.sources import SourceServer
from tests.test_bridge import registration, wait_status

PREFIX = "dragonfly_supernode_"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((PREFIX + name, tuple(sorted(labels.items()))), 0.0)


async def test_legacy_http_metrics_count_dfget_calls_by_code_and_route(settings: Settings) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        before = samples((await http.get("/metrics")).text)
        pulls = [await http.get(path, params={"taskId": "t" * 64, "srcCid": "127.0.0.1-1-1.000"})
                 for path in ("/peer/task", "/v1/peer/task", "/v1.0.6/peer/task")]
        bad = await http.post("/peer/registry", content=b"{not json", headers={"content-type": "application/json"})
        missing = await http.get("/no/such/route")
        after = samples((await http.get("/metrics")).text)

    assert all(p.status_code == 200 for p in pulls) and bad.status_code == 200 and missing.status_code == 404

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("http_requests_total", code="200", handler="/peer/task") == 3
    assert delta("http_requests_total", code="200", handler="/peer/registry") == 1
    assert delta("http_requests_total", code="404", handler="none") == 1
    # The legacy buckets, exactly: duration .1 … 120 s, sizes 100 … 1e9 bytes.
    assert delta("http_request_duration_seconds_bucket", handler="/peer/task", le="0.1") == 3
    assert delta("http_request_duration_seconds_bucket", handler="/peer/task", le="120.0") == 3
    assert delta("http_request_size_bytes_bucket", handler="/peer/registry", le="100.0") == 1
    assert delta("http_request_size_bytes_count", handler="/peer/registry") == 1
    assert delta("http_request_size_bytes_sum", handler="/peer/registry") == len(b"{not json")
    assert delta("http_response_size_bytes_count", handler="/peer/task") == 3
    assert delta("http_response_size_bytes_sum", handler="/peer/task") == sum(len(p.content) for p in pulls)
    buckets = {dict(labels)["le"] for (name, labels) in after if name == PREFIX + "http_request_size_bytes_bucket"}
    assert buckets == {"100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "1e+08", "1e+09", "+Inf"}
    assert not any(name == PREFIX + "http_requests_total" and dict(labels).get("handler") == "/metrics"
                   for (name, labels) in after)
    (info,) = [dict(labels) for (name, labels) in after if name == PREFIX + "build_info"]
    assert info["version"] == settings.version and set(info) == {"version", "revision", "os", "arch", "goversion"}


async def test_cluster_gauges_come_from_the_shared_state(settings: Settings, redis: Redis) -> None:
    """tasks{cdnstatus}, seeding progress and preheats{status}: what Redis holds, whoever wrote it (a
    worker's seed in progress is written as a Celery worker would, straight into the task's hash)."""
    fast = settings.model_copy(update={"gauge_refresh_seconds": 0.05})
    async with SourceServer() as source, live_supernode(fast) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("g.bin", os.urandom(300_000))
        url = source.url("g.bin")
        answer = (await http.post("/peer/registry", json=registration(url, "127.0.0.1-1-1.000"))).json()
        assert answer["code"] == 200
        await wait_status(redis, task_id(url), "SUCCESS")
        running = "f" * 64
        await redis.hset(task_key(running), mapping={"cdnStatus": "RUNNING", "seedBytes": 4000,
                                                     "httpFileLength": 10_000})
        await redis.zadd(TASK_INDEX, {running: 1})
        await redis.hset(preheat_key("p1"), mapping={"id": "p1", "status": "FAILED"})
        await redis.zadd(PREHEAT_INDEX, {"p1": 1})

        wanted = {("tasks", (("cdnstatus", "SUCCESS"),)): 1.0, ("tasks", (("cdnstatus", "RUNNING"),)): 1.0,
                  ("tasks", (("cdnstatus", "FAILED"),)): 0.0, ("seeding_bytes", ()): 4000.0,
                  ("seeding_total_bytes", ()): 10_000.0, ("preheats", (("status", "FAILED"),)): 1.0,
                  ("preheats", (("status", "SUCCESS"),)): 0.0}
        for _ in range(100):
            found = samples((await http.get("/metrics")).text)
            seen = {key: found.get((PREFIX + key[0], key[1])) for key in wanted}
            if seen == wanted:
                break
            await asyncio.sleep(0.05)
    assert seen == wanted
