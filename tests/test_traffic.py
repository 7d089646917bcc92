"""Traffic accounting (app/state/traffic.py): the split by source class adds up to the bytes a real
emulated swarm moved, counted once per piece whichever report channel arrives first."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import httpx
from redis.asyncio import Redis

from app.core.config import Settings
from app.protocol.pieces import payload_size
from app.state import schema
from app.state.traffic import Traffic, cluster_traffic, task_traffic, traffic_history, window_total
from app.swarm import Swarm
from app.swarm.result import CDN_CID_PREFIX, DfgetResult
from app.swarm.wire import metrics_body
from tests.live import live_supernode
from tests.sources import SourceServer


def framed_size(piece_num: int, raw_length: int, piece_size: int) -> int:
    """The framed bytes of one piece: its payload plus the 5-byte frame (PROTOCOL §10)."""
    payload = payload_size(piece_size)
    return min(payload, raw_length - piece_num * payload) + 5


def moved(results: list[DfgetResult], raw_length: int) -> Traffic:
    """What the emulated clients really fetched, by class: the first good fetch of each piece per client."""
    peer = seed = 0
    for result in results:
        seen: set[str] = set()
        for fetch in result.piece_fetches:
            if not fetch.ok or fetch.range in seen:
                continue
            seen.add(fetch.range)
            start = int(fetch.range.split("-")[0])
            size = framed_size(start // result.piece_size, raw_length, result.piece_size)
            if fetch.src_cid.startswith(CDN_CID_PREFIX):
                seed += size
            else:
                peer += size
    return Traffic(peer=peer, seed=seed, source=0)


async def test_the_split_adds_up_to_the_bytes_a_swarm_moved(settings: Settings, redis: Redis, tmp_path: Path) -> None:
    data = os.urandom(17 * 1024 * 1024 + 3)  # 5 pieces, the last one short
    async with SourceServer() as source, live_supernode(settings) as sn:
        source.add("f.bin", data)
        url = source.url("f.bin")
        async with Swarm(6, [sn.node], url, tmp_path / "out", versions=["0.4.1", "1.0.6"], sleep_scale=0.25) as swarm:
            results = await swarm.run()
        tid = results[0].task_id
        digest = hashlib.sha256(data).hexdigest()
        assert all(r.success and r.sha256 == digest and not r.back_sourced for r in results), [r.error for r in results]
        expected = moved(results, len(data))
        got = await task_traffic(redis, tid)
        assert got == expected
        assert expected.seed > 0 and expected.peer + expected.seed == 6 * (len(data) + 5 * 5)
        assert await cluster_traffic(redis) == expected
        assert window_total(await traffic_history(redis, 5)) == expected

        # A 1.0.x client that went back to the source reports it once, and dfget sends it twice.
        body = metrics_body(ip="127.0.0.1", backsource_reason=3, cid="127.0.0.9-1-1.000", call_system="t",
                            duration=1.5, file_length=len(data), port=40001, success=True, task_id=tid)
        refused = metrics_body(ip="127.0.0.1", backsource_reason=1003, cid="127.0.0.9-2-1.000", call_system="t",
                               duration=1.5, file_length=len(data), port=40001, success=True, task_id=tid)
        async with httpx.AsyncClient(base_url=sn.api) as http:
            for payload in (body, body, refused, b"not json", b"[1]"):
                answer = await http.post("/task/metrics", content=payload, headers={"Content-Type": "application/json"})
                assert answer.status_code == 200 and answer.json() == {"code": 1}
    after = await task_traffic(redis, tid)
    assert after == Traffic(peer=expected.peer, seed=expected.seed, source=len(data))
    assert (await cluster_traffic(redis)).source == len(data)
    assert after.p2p_ratio == expected.peer / after.total


async def test_the_lua_bucket_ttl_is_the_schema_s() -> None:
    prelude = (Path(schema.__file__).parent / "lua" / "_prelude.lua").read_text()
    match = re.search(r"TRAFFIC_BUCKET_TTL = (\d+)", prelude)
    assert match is not None and int(match.group(1)) == schema.TRAFFIC_BUCKET_TTL_SECONDS


async def test_history_buckets_expire_and_are_oldest_first(redis: Redis) -> None:
    history = await traffic_history(redis, 3)
    assert [start for start, _ in history] == sorted(start for start, _ in history)
    assert len(history) == 3 and all(t == Traffic(0, 0, 0) for _, t in history)
    await redis.hset(schema.traffic_bucket_key(history[-1][0] // 60), mapping={"peer": 7, "seed": 2})
    latest = (await traffic_history(redis, 1))[-1][1]
    assert latest == Traffic(peer=7, seed=2, source=0)
    assert len(await traffic_history(redis, 10**6)) == (schema.TRAFFIC_BUCKET_TTL_SECONDS - 60) // 60
