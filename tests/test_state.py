"""The Lua state transitions on the real Redis: registration, seeding, pulls, reports, leases."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from app.cdn.sink import SeedOutcome
from app.core.config import Settings
from app.scheduler.core import CDN
from app.state import schema
from app.state.store import ClusterState, PeerRegistration

TID = "722b477b471e3c784f4cdd0acfe6483e958412923283f9e7d8598ce3436e9854"
URL = "http://127.0.0.1:18080/file20m.bin"
PIECE = 4194304


def reg(cid: str, port: int = 40000, md5: str = "") -> PeerRegistration:
    return PeerRegistration(
        tid=TID, cid=cid, task_url=URL, raw_url=URL, md5=md5, identifier="", headers={}, peer_id=f"vm-{cid}",
        ip="127.0.0.1", port=port, path=f"/peer/file/{cid}", host_name="vm", version="0.4.1",
        super_node_ip="127.0.0.1", call_system="", dfdaemon=False,
    )


@pytest.fixture
async def state(redis: aioredis.Redis, settings: Settings) -> ClusterState:
    return ClusterState(redis, settings)


async def start(state: ClusterState, *cids: str) -> int:
    first = await state.register(reg(cids[0]), 20971520, PIECE, 5)
    assert first.result == "ok" and first.seed_epoch == 1
    for cid in cids[1:]:
        again = await state.register(reg(cid), None, 0, 0)
        assert again.result == "ok" and again.seed_epoch == 0
    return first.seed_epoch


async def seed_all(state: ClusterState, epoch: int, pieces: int = 6) -> None:
    assert await state.seed_pieces(TID, epoch, 0, [f"m{n}:{PIECE}" for n in range(pieces)], 20971520)
    assert await state.seed_finished(
        TID, epoch, SeedOutcome(success=True, file_length=20971550, raw_length=20971520, real_md5="abc",
                                piece_total=pieces)
    )


async def test_unknown_task_needs_a_probe_and_conflicts_are_refused(state: ClusterState) -> None:
    assert (await state.register(reg("c1"), None, 0, 0)).result == "unprobed"
    # As in Go's equalsTask: the md5 decides when the stored task has one.
    assert (await state.register(reg("c1", md5="aa"), 20971520, PIECE, 5)).result == "ok"
    assert (await state.register(reg("c2", md5="bb"), None, 0, 0)).result == "conflict"
    assert (await state.register(reg("c3", md5="aa"), None, 0, 0)).result == "ok"


async def test_only_one_registration_starts_the_seed(state: ClusterState) -> None:
    await state.register(reg("c0"), 20971520, PIECE, 5)
    outcomes = await asyncio.gather(*(state.register(reg(f"c{i}"), 20971520, PIECE, 5) for i in range(1, 20)))
    assert all(o.result == "ok" for o in outcomes)
    assert sum(1 for o in outcomes if o.seed_epoch) == 0


async def test_wait_until_pieces_are_published_then_four_from_the_cdn(state: ClusterState) -> None:
    epoch = await start(state, "c1")
    assert (await state.pull(TID, "c1", 700, 502, -1, "", "q1"))["kind"] == "wait"
    await state.seed_pieces(TID, epoch, 0, ["m0:1", "m1:1"], 8388598)
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "q1")
    assert snap["kind"] == "snapshot"
    assert sorted(p[0] for p in snap["pieces"]) == [0, 1]
    assigned = await state.assign(TID, "c1", "q1", [(0, CDN), (1, CDN)])
    assert [(a.piece_num, a.dst, a.md5) for a in assigned] == [(0, CDN, "m0:1"), (1, CDN, "m1:1")]


async def test_a_retried_pull_gets_the_same_answer_and_changes_nothing(state: ClusterState) -> None:
    epoch = await start(state, "c1")
    await seed_all(state, epoch)
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "q1")
    await state.assign(TID, "c1", "q1", [(n[0], CDN) for n in snap["pieces"][:4]])
    replay = await state.pull(TID, "c1", 700, 502, -1, "", "q1")
    assert replay["kind"] == "replay"
    assert sorted(item[0] for item in replay["assigned"]) == sorted(n[0] for n in snap["pieces"][:4])
    assert await state.redis.zcard(schema.load_key(TID, CDN)) == 4


async def test_success_reports_make_holders_and_lead_to_finish(state: ClusterState) -> None:
    epoch = await start(state, "c1", "c2")
    await seed_all(state, epoch)
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "a")
    await state.assign(TID, "c1", "a", [(0, CDN)])
    for _ in range(2):  # idempotent
        assert await state.piece_success(TID, "c1", 0, CDN)
    assert await state.redis.smembers(schema.holders_key(TID, 0)) == {"c1"}
    assert await state.redis.zcard(schema.load_key(TID, CDN)) == 0

    snap = await state.pull(TID, "c2", 700, 502, -1, "", "b")
    holders = {p[0]: p[3] for p in snap["pieces"]}
    assert holders[0] == ["c1"]
    assert snap["candidates"]["c1"] == [40000, 0, 0, "127.0.0.1"]
    assigned = await state.assign(TID, "c2", "b", [(0, "c1")])
    assert assigned[0].ip == "127.0.0.1" and assigned[0].port == 40000 and assigned[0].path == "/peer/file/c1"
    assert await state.redis.zcard(schema.load_key(TID, "c1")) == 1

    for n in range(1, 6):
        await state.piece_success(TID, "c1", n, CDN)
    final = await state.pull(TID, "c1", 701, 503, 5, CDN, "z")
    assert final == {"kind": "finish", "md5": "abc", "fileLength": 20971550}


async def test_failures_black_list_the_peer_once_per_failure(state: ClusterState) -> None:
    epoch = await start(state, "c1", "c2")
    await seed_all(state, epoch)
    await state.piece_success(TID, "c1", 0, CDN)
    await state.pull(TID, "c2", 700, 502, -1, "", "s")
    await state.assign(TID, "c2", "s", [(0, "c1")])
    for _ in range(3):  # a resent failure report counts once
        await state.pull(TID, "c2", 701, 500, 0, "c1", "f")
    assert await state.redis.hget(schema.dt_key(TID, "c2"), "errs") == "1"
    assert await state.redis.smembers(schema.black_key(TID, "c2")) == {"c1"}
    assert await state.assign(TID, "c2", "g", [(0, "c1")]) == []
    assert [a.dst for a in await state.assign(TID, "c2", "g", [(0, CDN)])] == [CDN]


async def test_service_down_and_file_not_exist_stop_offering_the_peer(state: ClusterState) -> None:
    epoch = await start(state, "c1", "c2", "c3")
    await seed_all(state, epoch)
    await state.piece_success(TID, "c1", 0, CDN)
    await state.piece_success(TID, "c3", 0, CDN)
    assert await state.service_down(TID, "c1")
    assert await state.piece_error(TID, "c2", "c3", "FILE_NOT_EXIST")
    snap = await state.pull(TID, "c2", 700, 502, -1, "", "s")
    assert {p[0]: p[3] for p in snap["pieces"]}[0] in ({}, [])
    assert await state.assign(TID, "c2", "s", [(0, "c1")]) == []
    assert await state.assign(TID, "c2", "s", [(0, "c3")]) == []


async def test_an_expired_piece_lease_is_offered_again(state: ClusterState, settings: Settings) -> None:
    state.settings = settings.model_copy(update={"piece_lease_seconds": 0.05})
    epoch = await start(state, "c1")
    await seed_all(state, epoch)
    await state.pull(TID, "c1", 700, 502, -1, "", "s")
    await state.assign(TID, "c1", "s", [(0, CDN)])
    await asyncio.sleep(0.1)
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "t")
    assert 0 in [p[0] for p in snap["pieces"]]
    assert snap["cdnLoad"] == 0


async def test_pieces_in_flight_at_a_re_registration_are_re_offered_on_a_short_lease(
    state: ClusterState, settings: Settings
) -> None:
    """A migrated dfget may hold pieces whose reports died with the old node. Re-offered, it re-reports
    a held piece at once, or ignores one it still fetches: neither may block it for a whole lease."""
    state.settings = settings.model_copy(update={"reoffer_lease_seconds": 0.2})
    epoch = await start(state, "c1")
    await seed_all(state, epoch)
    await state.pull(TID, "c1", 700, 502, -1, "", "s")
    await state.assign(TID, "c1", "s", [(0, CDN), (1, CDN)])
    assert (await state.register(reg("c1"), None, 0, 0)).result == "ok"  # the migration
    assert await state.redis.smembers(schema.reoffer_key(TID, "c1")) == {"0", "1"}

    snap = await state.pull(TID, "c1", 700, 502, -1, "", "m1")
    assert {0, 1} <= {p[0] for p in snap["pieces"]}
    assigned = await state.assign(TID, "c1", "m1", [(0, CDN), (1, CDN), (2, CDN)])
    assert [a.piece_num for a in assigned] == [0, 1, 2]
    run = await state.redis.hgetall(schema.run_key(TID, "c1"))
    leases = {int(n): int(v.rsplit("|", 1)[1]) for n, v in run.items()}
    # Re-offered pieces: the short lease; a fresh piece: the full one.
    assert leases[2] - leases[0] > 1000 * (settings.piece_lease_seconds - 1)
    assert abs(leases[0] - leases[1]) < 1000

    # The client held piece 0: its re-report closes it and leaves the re-offer set.
    snap = await state.pull(TID, "c1", 701, 503, 0, "", "m2")
    assert await state.redis.smembers(schema.reoffer_key(TID, "c1")) == {"1"}
    # Piece 1 was still downloading and its report is merged away: after the short lease it is back.
    assert 1 not in {p[0] for p in snap["pieces"]}
    await asyncio.sleep(0.3)
    snap = await state.pull(TID, "c1", 701, 503, 0, "", "m3")
    assert 1 in {p[0] for p in snap["pieces"]}
    # Once the client reports that piece as failed, it is a plain piece again: a full lease next time.
    await state.assign(TID, "c1", "m3", [(1, CDN)])
    await state.pull(TID, "c1", 701, 500, 1, CDN, "m4")
    assert await state.redis.smembers(schema.reoffer_key(TID, "c1")) == set()


async def test_a_silent_seeder_is_replaced_and_cannot_publish_any_more(state: ClusterState, settings: Settings) -> None:
    state.settings = settings.model_copy(update={"seed_lease_seconds": 0.05})
    epoch = await start(state, "c1")
    await asyncio.sleep(0.1)
    out = await state.pull(TID, "c1", 700, 502, -1, "", "s")
    assert out["kind"] == "wait" and out["seedEpoch"] == epoch + 1
    assert not await state.seed_pieces(TID, epoch, 0, ["m0:1"], 1)
    assert not await state.seed_heartbeat(TID, epoch)
    assert await state.seed_heartbeat(TID, epoch + 1)
    assert await state.seed_job(TID, epoch) is None
    job = await state.seed_job(TID, epoch + 1)
    assert job is not None and job.raw_url == URL


async def test_failed_seed_answers_500_and_not_found_is_remembered(state: ClusterState) -> None:
    epoch = await start(state, "c1")
    await state.seed_finished(TID, epoch, SeedOutcome(success=False, error="source returned 404", reason="not_found"))
    out = await state.pull(TID, "c1", 700, 502, -1, "", "s")
    assert out["kind"] == "failed" and "404" in out["msg"]
    assert await state.unreachable_reason(TID) == "source returned 404"


async def test_unknown_cid_or_task_is_reported_as_unknown(state: ClusterState) -> None:
    assert (await state.pull(TID, "nobody", 700, 502, -1, "", "s"))["kind"] == "unknown"
    await start(state, "c1")
    assert (await state.pull(TID, "nobody", 700, 502, -1, "", "s"))["kind"] == "unknown"
    assert not await state.piece_success(TID, "nobody", 0, CDN)


async def test_every_task_key_expires(state: ClusterState) -> None:
    epoch = await start(state, "c1", "c2")
    await seed_all(state, epoch)
    await state.piece_success(TID, "c1", 0, CDN)
    await state.pull(TID, "c2", 700, 502, -1, "", "s")
    await state.assign(TID, "c2", "s", [(0, "c1"), (1, CDN)])
    await state.pull(TID, "c2", 701, 500, 0, "c1", "f")
    keys = [key async for key in state.redis.scan_iter(match=f"{schema.task_prefix(TID)}*")]
    assert len(keys) >= 10
    for key in keys:
        ttl = await state.redis.ttl(key)
        assert 0 < ttl <= state.settings.task_ttl_seconds, key
    assert await state.redis.ttl(schema.TASK_INDEX) == -1  # pruned by score on every registration


async def test_the_task_index_forgets_expired_tasks(state: ClusterState) -> None:
    await state.redis.zadd(schema.TASK_INDEX, {"gone": 1})
    await start(state, "c1")
    assert await state.redis.zrange(schema.TASK_INDEX, 0, -1) == [TID]


async def test_an_assign_run_twice_for_the_same_pull_repeats_its_picks(state: ClusterState) -> None:
    epoch = await start(state, "c1")
    await seed_all(state, epoch)
    await state.pull(TID, "c1", 700, 502, -1, "", "q")
    first = await state.assign(TID, "c1", "q", [(0, CDN), (1, CDN)])
    again = await state.assign(TID, "c1", "q", [(0, CDN), (1, CDN)])
    assert [a.piece_num for a in first] == [a.piece_num for a in again] == [0, 1]
    assert await state.redis.zcard(schema.load_key(TID, CDN)) == 2
    assert await state.assign(TID, "c1", "other", [(0, CDN)]) == []


async def test_registrations_are_listed_as_peers_and_pruned(state: ClusterState) -> None:
    await state.redis.zadd(schema.PEERS_SEEN, {"old-peer": 1})
    await state.redis.hset(schema.PEERS, "old-peer", "{}")
    await start(state, "c1", "c2")
    peers = await state.redis.hgetall(schema.PEERS)
    assert set(peers) == {"vm-c1", "vm-c2"}
    record = orjson.loads(peers["vm-c1"])
    assert record["IP"] == "127.0.0.1" and record["port"] == 40000 and record["cid"] == "c1"


async def test_a_lost_report_is_offered_again_after_a_few_piece_times_not_the_whole_lease(
    state: ClusterState, settings: Settings
) -> None:
    """The lease follows the task's observed piece time (floor and cap), so a report lost with a replica
    or an outage blocks its piece for seconds, not for DF_PIECE_LEASE_SECONDS."""
    state.settings = settings.model_copy(update={"piece_lease_floor_seconds": 0.3, "piece_lease_factor": 3.0})
    epoch = await start(state, "c1")
    await seed_all(state, epoch)
    await state.pull(TID, "c1", 700, 502, -1, "", "s")
    assigned = await state.assign(TID, "c1", "s", [(n, CDN) for n in range(4)])
    assert len(assigned) == 4
    # Before any piece time is known, a piece gets the full lease.
    run = await state.redis.hgetall(schema.run_key(TID, "c1"))
    dst, given, expiry = run["0"].split("|")
    assert dst == CDN and int(expiry) - int(given) == settings.piece_lease_seconds * 1000
    await asyncio.sleep(0.15)
    for n in range(4):
        assert await state.piece_success(TID, "c1", n, CDN)
    task = await state.redis.hgetall(schema.task_key(TID))
    typical = int(task["pieceMs"])
    assert task["pieceSamples"] == "4" and 150 <= typical < 1000, task

    await state.pull(TID, "c1", 701, 503, 3, CDN, "p1")
    assert [a.piece_num for a in await state.assign(TID, "c1", "p1", [(4, CDN)])] == [4]
    dst, given, expiry = (await state.redis.hget(schema.run_key(TID, "c1"), "4")).split("|")
    lease = int(expiry) - int(given)
    assert lease == max(300, 3 * typical) < settings.piece_lease_seconds * 1000
    # The report of piece 4 never comes: once the short lease is over, the piece is offered again.
    snap = await state.pull(TID, "c1", 701, 503, 3, CDN, "p2")
    assert 4 not in {p[0] for p in snap["pieces"]}
    await asyncio.sleep(lease / 1000 + 0.05)
    snap = await state.pull(TID, "c1", 701, 503, 3, CDN, "p3")
    assert 4 in {p[0] for p in snap["pieces"]}
