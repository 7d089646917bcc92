"""The REST views the dashboard reads (issue 8), after a real emulated swarm: overview, task rows,
the task's swarm (piece map, peers) agree with each other and with the bytes the clients moved."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
from redis.asyncio import Redis

from app.core.config import Settings
from app.state.traffic import task_traffic
from app.swarm import Swarm
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode
from tests.sources import SourceServer
from tests.test_traffic import moved

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


async def test_the_views_agree_after_a_swarm(settings: Settings, redis: Redis, tmp_path: Path) -> None:
    data = os.urandom(13 * 1024 * 1024 + 11)  # 4 pieces
    async with SourceServer() as source, live_supernode(settings) as sn, \
            httpx.AsyncClient(base_url=sn.api, headers=AUTH) as http:
        source.add("f.bin", data)
        async with Swarm(4, [sn.node], source.url("f.bin"), tmp_path / "out", versions=["1.0.6", "0.4.1"],
                         sleep_scale=0.25) as swarm:
            results = await swarm.run()
            assert all(r.success and r.sha256 == hashlib.sha256(data).hexdigest() for r in results)
            tid = results[0].task_id
            expected = moved(results, len(data))
            assert await task_traffic(redis, tid) == expected

            page = (await http.get("/api/v1/tasks", params={"limit": 10})).json()
            assert page["total"] == 1
            row = page["tasks"][0]
            assert row["ID"] == tid and row["cdnStatus"] == "SUCCESS" and row["progress"]["percent"] == 100.0
            assert row["peers"] == 4 and row["peersDone"] == 4 and row["peersRunning"] == 0
            assert row["traffic"] == {"peer": expected.peer, "seed": expected.seed, "source": 0}
            assert (await http.get(f"/api/v1/tasks/{tid}")).json()["traffic"] == row["traffic"]

            swarm_view = (await http.get(f"/api/v1/tasks/{tid}/swarm")).json()
            assert swarm_view["traffic"] == row["traffic"]
            piece_map = swarm_view["pieceMap"]
            assert piece_map["pieceTotal"] == 4 and piece_map["seeded"] == [True] * 4
            # Every client serves (all have uploaders) and reported every piece: 4 holders each.
            assert piece_map["holders"] == [4] * 4
            assert swarm_view["peersTotal"] == 4 and swarm_view["peersDone"] == 4
            peers = swarm_view["peers"]
            assert {p["cid"] for p in peers} == {r.cid for r in results}
            assert all(p["piecesDone"] == 4 and p["percent"] == 100.0 and p["status"] == "SUCCESS" for p in peers)
            assert sum(p["servedBytes"] for p in peers) == expected.peer
            small = (await http.get(f"/api/v1/tasks/{tid}/swarm", params={"pieceOffset": 3, "peerLimit": 1})).json()
            assert small["pieceMap"]["offset"] == 3 and len(small["pieceMap"]["holders"]) == 1
            assert len(small["peers"]) == 1
            assert (await http.get(f"/api/v1/tasks/{'0' * 64}/swarm")).status_code == 404

            view = (await http.get("/api/v1/overview", params={"minutes": 5})).json()
            traffic = view["traffic"]
            assert traffic["total"] == traffic["window"] == row["traffic"] and traffic["minutes"] == 5
            assert traffic["p2pRatio"] == round(expected.peer / (expected.peer + expected.seed), 4)
            assert len(traffic["history"]) == 5
            assert sum(p["peer"] for p in traffic["history"]) == expected.peer
            totals = view["totals"]
            assert totals["tasks"] == 1 and totals["activeTasks"] == 1 and totals["tasksByStatus"] == {"SUCCESS": 1}
            assert totals["peers"] >= 4
            assert [r["id"] for r in view["replicaAges"]] == [r["id"] for r in view["cluster"]["replicas"]]
            assert all(0 <= r["heartbeatAgeSeconds"] < 60 for r in view["replicaAges"])
            assert view["limits"]["peerDownLimit"] == settings.peer_down_limit
            assert (await http.get("/api/v1/overview", params={"minutes": 0})).status_code == 400
        async with httpx.AsyncClient(base_url=sn.api) as anonymous:
            assert (await anonymous.get("/api/v1/overview")).status_code == 401
