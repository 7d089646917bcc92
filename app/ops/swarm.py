"""One task's swarm as an operator sees it: piece map, peers with progress, bytes by source class."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from app.ops.models import PieceMap, TaskPeer, TaskRow, TaskSwarm, TrafficView
from app.state import schema
from app.state.traffic import task_traffic, tasks_traffic
from app.tasks.models import TaskView

RUNNING_STATUSES = frozenset({"WAITING", "RUNNING"})


def _int(value: Any) -> int:
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def peer_counts(statuses: list[tuple[str | None, str | None]]) -> tuple[int, int]:
    """(running, done) of a task's peers from their (status, down) fields: a peer that went down is
    neither (it no longer downloads nor serves)."""
    running = sum(1 for status, down in statuses if status in RUNNING_STATUSES and down != "1")
    done = sum(1 for status, _ in statuses if status == "SUCCESS")
    return running, done


async def peer_counts_of(redis: aioredis.Redis, tids: list[str]) -> list[tuple[int, int, int]]:
    """(total, running, done) per task, in two pipelined round trips (a page of the task list)."""
    if not tids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for tid in tids:
            pipe.smembers(schema.cids_key(tid))
        cid_sets: list[set[str]] = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for tid, cids in zip(tids, cid_sets, strict=True):
            for cid in cids:
                pipe.hmget(schema.dt_key(tid, cid), ["status", "down"])
        replies: list[list[str | None]] = await pipe.execute()
    out, at = [], 0
    for cids in cid_sets:
        rows = [(r[0], r[1]) for r in replies[at : at + len(cids)]]
        at += len(cids)
        running, done = peer_counts(rows)
        out.append((len(cids), running, done))
    return out


_PEER_FIELDS = ["peerId", "ip", "port", "hostName", "version", "status", "down", "servedPieces", "servedBytes",
                "errs", "serr"]


async def task_swarm(
    redis: aioredis.Redis, tid: str, piece_offset: int, piece_limit: int, peer_offset: int, peer_limit: int
) -> TaskSwarm | None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(schema.task_key(tid), "pieceTotal")
        pipe.hkeys(schema.cdn_key(tid))
        pipe.smembers(schema.cids_key(tid))
        piece_total_raw, seeded_keys, cid_set = await pipe.execute()
    if piece_total_raw is None:
        return None
    seeded = {int(n) for n in seeded_keys if n.isdigit()}
    # pieceTotal is provisional while seeding (0 for an unknown length): the seed cache may know more.
    piece_total = max(_int(piece_total_raw), max(seeded, default=-1) + 1)
    numbers = range(piece_offset, min(piece_total, piece_offset + piece_limit))
    cids = sorted(cid_set)
    async with redis.pipeline(transaction=False) as pipe:
        for n in numbers:
            pipe.scard(schema.holders_key(tid, n))
        for cid in cids:
            pipe.hmget(schema.dt_key(tid, cid), ["status", "down"])
        replies = await pipe.execute()
    holders = [int(c) for c in replies[: len(numbers)]]
    running, done = peer_counts([(r[0], r[1]) for r in replies[len(numbers):]])
    page = cids[peer_offset : peer_offset + peer_limit]
    async with redis.pipeline(transaction=False) as pipe:
        for cid in page:
            pipe.hmget(schema.dt_key(tid, cid), _PEER_FIELDS)
            pipe.bitcount(schema.done_key(tid, cid))
        peer_replies = await pipe.execute()
    peers = []
    for i, cid in enumerate(page):
        fields = dict(zip(_PEER_FIELDS, peer_replies[2 * i], strict=True))
        have = int(peer_replies[2 * i + 1])
        peers.append(TaskPeer(
            cid=cid, peerId=fields["peerId"], ip=fields["ip"], port=_int(fields["port"]) or None,
            hostName=fields["hostName"], version=fields["version"], status=fields["status"],
            down=fields["down"] == "1", piecesDone=have,
            percent=round(min(100.0, have * 100.0 / piece_total), 2) if piece_total else None,
            servedPieces=_int(fields["servedPieces"]), servedBytes=_int(fields["servedBytes"]),
            clientErrors=_int(fields["errs"]), servingErrors=_int(fields["serr"]),
        ))
    return TaskSwarm(
        taskId=tid,
        traffic=TrafficView.of(await task_traffic(redis, tid)),
        pieceMap=PieceMap(pieceTotal=piece_total, offset=piece_offset, seeded=[n in seeded for n in numbers],
                          holders=holders),
        peersTotal=len(cids), peersRunning=running, peersDone=done, peers=peers,
    )


async def task_rows(redis: aioredis.Redis, views: list[TaskView]) -> list[TaskRow]:
    """The task list's rows with peers running/done and bytes by source class (a page: bounded)."""
    tids = [v.ID for v in views]
    counts = await peer_counts_of(redis, tids)
    traffic = await tasks_traffic(redis, tids)
    return [
        TaskRow(**view.model_dump(), peersRunning=running, peersDone=done, traffic=TrafficView.of(t))
        for view, (_, running, done), t in zip(views, counts, traffic, strict=True)
    ]
