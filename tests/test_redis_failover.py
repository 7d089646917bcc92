"""Redis failures on real servers (tests/redis_servers.py): a Sentinel failover seen by the replicas'
state client, the seeder's and the audit consumer's connections; a paused Redis; an AOF restart.

Every client here is built by ``create_redis``, as a replica or worker builds it. Measured times are
printed (``pytest -s``) and bounded by the assertions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from app.audit.events import AuditEvent
from app.audit.runtime import AuditRuntime
from app.cdn.gc import run_gc_loop
from app.cdn.storage import LocalSeedStorage
from app.cluster.gauges import run_gauge_loop
from app.cluster.heartbeat import ReplicaPresence
from app.core.config import Settings
from app.core.redis import create_redis, is_outage
from app.state import schema
from app.state.store import ClusterState
from tests.cluster import REPO
from tests.postgres import rows
from tests.redis_servers import RedisServer, SentinelTopology
from tests.test_state import PIECE, TID, reg

# Once the sentinels announce the new master, clients must be back within this. What it takes: the
# next command's reconnect asks the sentinels (~ms) and checks ROLE; the pool also asks once a second.
RECOVERY_AFTER_ANNOUNCE_SECONDS = 1.5


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    with SentinelTopology(tmp_path / "redis") as topo:
        yield topo


def on(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"redis_url": url})


def pooled_addresses(client: aioredis.Redis) -> set[tuple[str, int]]:
    pool: Any = client.connection_pool
    conns = [*pool._available_connections, *pool._in_use_connections]
    return {(c.host, c.port) for c in conns if c.is_connected}


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


# --- Sentinel: the replicas' state client ----------------------------------------------------------------


@pytest.mark.slow
async def test_cluster_state_follows_a_master_kill(topology: SentinelTopology, settings: Settings) -> None:
    """8 writers keep running the register script while the master is SIGKILLed: each fails only
    during the failover (with an outage error, never another), works again right after the sentinels
    announce the new master, and ends with every pooled connection on the new master."""
    client = create_redis(on(settings, topology.url(0)))
    state = ClusterState(client, settings)
    assert (await state.register(reg("c0"), 400 * PIECE, PIECE, 400)).result == "ok"
    old = topology.master_address()
    stop = asyncio.Event()
    outcomes: list[list[tuple[float, float, bool]]] = [[] for _ in range(8)]  # (sent, answered, ok)

    async def writer(n: int) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            sent = time.monotonic()
            try:
                ok = (await state.register(reg(f"w{n}-{count}"), None, 0, 0)).result == "ok"
            except Exception as exc:
                assert is_outage(exc), repr(exc)
                ok = False
            outcomes[n].append((sent, time.monotonic(), ok))
            await asyncio.sleep(0.01)

    writers = [asyncio.create_task(writer(n)) for n in range(8)]
    held = await client.connection_pool.get_connection()  # on the old master
    try:
        await until(lambda: _all_succeeded(outcomes, after=0), 5, "the writers to start")
        killed_at = await asyncio.to_thread(topology.kill_master)
        new, announced_after = await asyncio.to_thread(topology.wait_failover)
        # What a command's retry does after its connection died with the master: disconnect, send
        # again. The reconnect must ask the sentinels, not dial the dead address it had.
        await held.disconnect()
        await held.send_command("PING")
        assert await held.read_response() == "PONG"
        assert (held.host, held.port) == new
        await client.connection_pool.release(held)
        announced_at = killed_at + announced_after
        await until(lambda: _all_succeeded(outcomes, after=announced_at), 10, "every writer to succeed again")
        later = time.monotonic() + 0.2
        await until(lambda: _all_succeeded(outcomes, after=later), 5, "a little more writing")
    finally:
        stop.set()
        await asyncio.gather(*writers)
    try:
        # A call sent after the kill cannot have been answered by the old master.
        recovered = [min(done for sent, done, ok in log if ok and sent > killed_at) for log in outcomes]
        failed = [sent for log in outcomes for sent, _, ok in log if not ok]
        print(f"\nmaster kill: announced after {announced_after:.2f} s; writers back "
              f"{min(recovered) - killed_at:.2f}-{max(recovered) - killed_at:.2f} s after the kill; "
              f"{len(failed)} failed calls")
        assert new != old
        assert max(recovered) - announced_at < RECOVERY_AFTER_ANNOUNCE_SECONDS
        # Once back, nothing fails again.
        assert all(sent < r for log, r in zip(outcomes, recovered, strict=True) for sent, _, ok in log if not ok)
        assert pooled_addresses(client) == {new}
        # 8 concurrent rediscoveries left the client asking all 3 sentinels (redis-py's own list lost one).
        sentinels = client.connection_pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
        assert len({id(s) for s in sentinels}) == 3
        # The writes after the failover are on the new master (the old one is dead).
        with topology.master().client() as admin:
            assert admin.hexists(schema.task_key(TID), "cdnStatus")
    finally:
        await client.aclose()


async def _all_succeeded(outcomes: list[list[tuple[float, float, bool]]], after: float) -> bool:
    """Every writer had a call sent after ``after`` succeed."""
    return all(any(ok and sent > after for sent, _, ok in log) for log in outcomes)


SET_SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"


@pytest.mark.slow
async def test_a_demoted_master_sends_writes_to_the_new_one(topology: SentinelTopology, settings: Settings) -> None:
    """A failover leaves the old master alive and demoted (SENTINEL FAILOVER, then REPLICAOF): the
    pooled connections to it get READONLY; each write must reconnect through the sentinels and land on
    the new master, without an error reaching the caller."""
    client = create_redis(on(settings, topology.url(0)))
    script = client.register_script(SET_SCRIPT)
    old = topology.master()
    try:
        assert await asyncio.gather(*(script(keys=[f"k{n}"], args=["before"]) for n in range(8))) == ["before"] * 8
        assert pooled_addresses(client) == {old.address}
        new, took = await asyncio.to_thread(topology.failover)
        await asyncio.to_thread(topology.demote, old)
        # Concurrent writes on the old connections: each meets READONLY once, then the new master.
        assert await asyncio.gather(*(script(keys=[f"k{n}"], args=["after"]) for n in range(8))) == ["after"] * 8
        with topology.master().client() as admin:
            assert admin.mget([f"k{n}" for n in range(8)]) == ["after"] * 8
        assert pooled_addresses(client) == {new}
        print(f"\nforced failover announced after {took:.2f} s")
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_failover_moves_live_connections_before_the_old_master_is_demoted(
    topology: SentinelTopology, settings: Settings
) -> None:
    """SENTINEL FAILOVER: the old master keeps accepting writes until the sentinels demote it ~10 s
    later, and whatever lands there is lost when it resyncs. Healthy pooled connections must leave it
    soon after the new master is announced, not at their next reconnect."""
    client = create_redis(on(settings, topology.url(0)))
    script = client.register_script(SET_SCRIPT)
    old = topology.master()
    try:
        assert await asyncio.gather(*(script(keys=["k"], args=["0"]) for _ in range(4))) == ["0"] * 4
        _, took = await asyncio.to_thread(topology.failover)
        announced_at = time.monotonic()
        with topology.master().client() as admin:
            n = 0
            while True:
                n += 1
                assert await script(keys=["k"], args=[str(n)]) == str(n)
                if admin.get("k") == str(n):
                    break
                assert time.monotonic() - announced_at < RECOVERY_AFTER_ANNOUNCE_SECONDS, "writes stay on the old one"
                await asyncio.sleep(0.01)
        moved = time.monotonic() - announced_at
        assert old.info("replication")["role"] == "master"  # not demoted yet: the pool moved on its own
        print(f"\nforced failover announced after {took:.2f} s; writes on the new master {moved:.2f} s later")
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_hung_sentinel_is_skipped_and_a_non_master_refused(
    topology: SentinelTopology, settings: Settings
) -> None:
    """A sentinel that accepts but never answers costs one socket timeout, then the next one is asked,
    and it is not forgotten.
    A server the sentinels still name as master but that is a replica now (roles swapped by hand,
    before the sentinels noticed) is refused by the ROLE check: an outage error, not stale reads."""
    timeout = settings.redis_socket_timeout_seconds
    first = topology.sentinels[0]
    first.pause()
    try:
        client = create_redis(on(settings, topology.url(0)))
        started = time.monotonic()
        assert await asyncio.gather(*(client.set(f"k{n}", "v") for n in range(8))) == [True] * 8
        took = time.monotonic() - started
        # 8 connections asked the sentinels at once, past the hung one: all 3 are still asked next time
        # (redis-py's own reordering duplicated one and dropped another).
        sentinels = client.connection_pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
        assert len({id(s) for s in sentinels}) == 3
        await client.aclose()
    finally:
        first.resume()
    print(f"\na hung first sentinel: the first commands took {took:.2f} s")
    assert took < timeout + 0.5

    master = topology.master()
    replica = next(s for s in topology.servers if s is not master)
    with replica.client() as admin:
        admin.execute_command("REPLICAOF", "NO", "ONE")
    with master.client() as admin:
        admin.execute_command("REPLICAOF", replica.address[0], str(replica.port))
    assert topology.master_address() == master.address  # what the sentinels still say
    client = create_redis(on(settings, topology.url(0)))
    try:
        with pytest.raises(Exception) as refused:
            await client.get("k")
        assert is_outage(refused.value) and "not the master" in str(refused.value), repr(refused.value)
    finally:
        await client.aclose()


# --- Sentinel: the seeder's connection, in a process of its own like a worker ---------------------------------

SEED_WRITER = """
import asyncio, json, sys, time
from app.core.config import Settings
from app.core.redis import create_redis, is_outage
from app.state.store import ClusterState

async def main(url: str, tid: str, epoch: int, pieces: int, piece: int) -> None:
    settings = Settings(redis_url=url, advertise_ip="127.0.0.1", seed_lease_seconds=60)
    state = ClusterState(create_redis(settings), settings)
    for n in range(pieces):
        while True:  # like the seeder: an outage is waited out, anything else ends the job
            try:
                ok = await state.seed_pieces(tid, epoch, n, [f"m{n}:{piece}"], (n + 1) * piece)
                print(json.dumps({"piece": n, "ok": bool(ok), "t": time.monotonic()}), flush=True)
                break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                print(json.dumps({"piece": n, "error": repr(exc), "t": time.monotonic()}), flush=True)
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.02)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
"""


@pytest.mark.slow
async def test_the_seeders_connection_follows_a_master_kill(topology: SentinelTopology, settings: Settings) -> None:
    """A seed-like writer process publishes pieces through create_redis while the master dies: its
    writes resume on the new master right after the announcement, and every piece it published after
    the kill is there."""
    client = create_redis(on(settings, topology.url(0)))
    state = ClusterState(client, settings)
    pieces = 200
    epoch = (await state.register(reg("c0"), pieces * PIECE, PIECE, pieces)).seed_epoch
    assert epoch == 1
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SEED_WRITER, topology.url(0), TID, str(epoch), str(pieces), str(PIECE),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    lines: list[dict[str, Any]] = []

    async def read_until_piece(n: int) -> None:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while line := await proc.stdout.readline():
                lines.append(json.loads(line))
                if lines[-1].get("ok") and lines[-1]["piece"] >= n:
                    return
        raise AssertionError(f"the writer ended before piece {n}: {await _stderr(proc)}")

    try:
        await read_until_piece(10)
        killed_at = await asyncio.to_thread(topology.kill_master)
        new, announced_after = await asyncio.to_thread(topology.wait_failover)
        await read_until_piece(pieces - 1)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, await _stderr(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    announced_at = killed_at + announced_after
    back = min(line["t"] for line in lines if line.get("ok") and line["t"] > killed_at)
    errors = [line for line in lines if "error" in line]
    print(f"\nseeder: announced after {announced_after:.2f} s, writing again {back - killed_at:.2f} s after "
          f"the kill; {len(errors)} failed writes")
    assert all(line["ok"] for line in lines if "ok" in line)  # the epoch held: no write was refused
    assert back - announced_at < RECOVERY_AFTER_ANNOUNCE_SECONDS
    assert not [line for line in errors if line["t"] > back]
    with topology.master().client() as admin:
        assert topology.master().address == new
        published = admin.hgetall(f"{schema.task_prefix(TID)}cdn")
    after_kill = {line["piece"] for line in lines if line.get("ok") and line["t"] > killed_at}
    assert after_kill and all(str(n) in published for n in after_kill)
    await client.aclose()


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    return (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""


# --- Sentinel: the audit consumer -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_audit_consumer_follows_a_master_kill_and_a_lost_group(
    topology: SentinelTopology, settings: Settings, pg_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer of a replica (AuditRuntime over create_redis) keeps writing to Postgres after the
    master dies: events recorded after the failover land in the table. It logs the outage once and
    its end once. A consumer group lost with the old master is created again."""
    caplog.set_level(logging.INFO, logger="app.audit.writer")
    config = on(settings, topology.url(0)).model_copy(update={"database_url": pg_db})
    consumer_redis = create_redis(config)
    producer = create_redis(config)
    runtime = AuditRuntime.start(consumer_redis, config, "replica-1")
    try:
        assert await runtime.ready(30)
        await _record(producer, "before", 5)
        await until(lambda: _written(pg_db, "before", 5), 15, "the events before the kill in Postgres")

        killed_at = await asyncio.to_thread(topology.kill_master)
        _, announced_after = await asyncio.to_thread(topology.wait_failover)
        await _record(producer, "after", 5)
        await until(lambda: _written(pg_db, "after", 5), 10, "the events after the failover in Postgres")
        written_after = time.monotonic() - killed_at
        print(f"\naudit: announced after {announced_after:.2f} s, events after the failover in Postgres "
              f"{written_after:.2f} s after the kill")

        # A failover to a replica that never got the group (here: destroyed on the new master).
        with topology.master().client() as admin:
            assert admin.execute_command("XGROUP", "DESTROY", schema.AUDIT_STREAM, schema.AUDIT_GROUP) == 1
        await _record(producer, "regrouped", 5)
        await until(lambda: _written(pg_db, "regrouped", 5), 10, "the events after the group was lost")
        assert await consumer_redis.xinfo_groups(schema.AUDIT_STREAM)
        assert runtime._task is not None and not runtime._task.done()  # the loop never died
    finally:
        await runtime.stop()
        await consumer_redis.aclose()
        await producer.aclose()
    records = [r for r in caplog.records if r.name == "app.audit.writer"]
    outage_warnings = [r for r in records if r.levelno == logging.WARNING and "Redis unavailable" in r.getMessage()]
    back = [r for r in records if r.levelno == logging.INFO and "works again" in r.getMessage()]
    assert len(outage_warnings) == 1 and len(back) == 1, [r.getMessage() for r in records]
    assert not [r for r in records if r.exc_info], "no traceback for an outage"
    # Exactly once: nothing written twice across the failover and the new group.
    found = await rows(pg_db, "SELECT stream_id FROM audit_events")
    assert len(found) == len({r["stream_id"] for r in found}) == 15


async def _record(redis: aioredis.Redis, actor: str, count: int) -> None:
    """XADD like RedisAuditLog does, waiting out the end of the failover on the producer's side."""
    for n in range(count):
        event = orjson.dumps(asdict(AuditEvent(actor=actor, action="task.created", task_id=f"{actor}{n}")))
        deadline = time.monotonic() + 10
        while True:
            try:
                await redis.xadd(schema.AUDIT_STREAM, {"event": event})
                break
            except Exception as exc:
                if not is_outage(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def _written(url: str, actor: str, count: int) -> bool:
    return len(await rows(url, "SELECT 1 FROM audit_events WHERE actor = $1", actor)) >= count


# --- a paused Redis, an AOF restart ---------------------------------------------------------------------------


async def test_a_paused_redis_fails_a_command_within_the_socket_timeout(tmp_path: Path, settings: Settings) -> None:
    """SIGSTOP (a network blip: the kernel accepts, nobody answers): a script on a pooled connection
    fails after the socket timeout, not never and not after retries; the client works after SIGCONT."""
    with RedisServer(tmp_path) as server:
        client = create_redis(on(settings, server.url(0)))
        script = client.register_script(SET_SCRIPT)
        timeout = settings.redis_socket_timeout_seconds
        try:
            assert await script(keys=["k"], args=["1"]) == "1"
            server.pause()
            started = time.monotonic()
            with pytest.raises(Exception) as failure:
                await script(keys=["k"], args=["2"])
            took = time.monotonic() - started
            assert is_outage(failure.value), repr(failure.value)
            # A new connection hangs the same way (its handshake gets no answer).
            started = time.monotonic()
            with pytest.raises(Exception) as fresh:
                await asyncio.gather(*(client.ping() for _ in range(3)))
            took_fresh = time.monotonic() - started
            assert is_outage(fresh.value), repr(fresh.value)
            server.resume()
            assert await script(keys=["k"], args=["3"]) == "3"
            print(f"\npaused Redis: the command failed after {took:.2f} s, a new connection after "
                  f"{took_fresh:.2f} s (socket timeout {timeout} s)")
            assert timeout - 0.05 <= took < timeout + 0.5
            assert took_fresh < timeout + 0.5
        finally:
            server.resume()
            await client.aclose()


async def test_background_loops_log_an_outage_once_and_live_on(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The replica heartbeat, the cluster gauges and the disk GC, every 50 ms against a Redis that is
    killed and restarted: each loop logs one WARNING when the outage starts and one INFO when it ends,
    with no traceback, and is still running."""
    caplog.set_level(logging.INFO)
    fast = settings.model_copy(update={"replica_heartbeat_seconds": 0.05, "gc_interval_seconds": 0.05})
    names = {"app.cluster": "heartbeat", "app.cluster.gauges": "cluster gauges", "app.cdn.gc": "disk GC"}
    with RedisServer(tmp_path / "redis") as server:
        client = create_redis(on(fast, server.url(0)))
        presence = ReplicaPresence(client, on(fast, server.url(0)))
        loops = [
            asyncio.create_task(presence.run()),
            asyncio.create_task(run_gauge_loop(client, 0.05)),
            asyncio.create_task(run_gc_loop(client, LocalSeedStorage(tmp_path / "seed"), fast)),
        ]

        def logged(level: int, text: str) -> dict[str, int]:
            found = {name: 0 for name in names}
            for record in caplog.records:
                if record.name in names and record.levelno == level and text in record.getMessage():
                    found[record.name] += 1
            return found

        try:
            await until(lambda: _true(server.info("keyspace") != {}), 5, "a heartbeat")
            server.kill()
            await until(lambda: _true(all(logged(logging.WARNING, "Redis unavailable").values())), 5, "3 warnings")
            # Not a wait for a condition: a few more failed rounds of each loop, which must stay silent.
            await asyncio.sleep(0.3)
            server.restart()
            await until(lambda: _true(all(logged(logging.INFO, "works again").values())), 5, "3 recoveries")
            assert not [task for task in loops if task.done()]
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await client.aclose()
    assert logged(logging.WARNING, "") == {name: 1 for name in names}, [r.getMessage() for r in caplog.records]
    assert logged(logging.INFO, "works again") == {name: 1 for name in names}
    assert not [r for r in caplog.records if r.name in names and r.exc_info]


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("aof", [True, False])
async def test_an_aof_redis_keeps_acknowledged_writes_across_a_kill(
    tmp_path: Path, settings: Settings, aof: bool
) -> None:
    """``appendonly yes`` + ``appendfsync everysec``: a SIGKILLed Redis process loses no acknowledged
    write (Redis writes the AOF before it replies; the fsync each second bounds what a host crash can
    lose to ~1 s). Without persistence (the control) everything is gone, so this test can fail. The
    client the state was written with works again at once after the restart."""
    with RedisServer(tmp_path, aof=aof) as server:
        client = create_redis(on(settings, server.url(0)))
        state = ClusterState(client, settings)
        try:
            assert (await state.register(reg("c0"), 20 * PIECE, PIECE, 20)).seed_epoch == 1
            for n in range(1, 20):
                assert (await state.register(reg(f"c{n}"), None, 0, 0)).result == "ok"
            server.kill()  # at once: no fsync can have run since the last write
            server.restart()
            assert server.info("persistence")["aof_enabled"] == int(aof)
            geometry = await state.task_geometry(TID)  # the pooled connection died with the server
            peers = await client.scard(schema.cids_key(TID))
        finally:
            await client.aclose()
    if aof:
        assert geometry == (20 * PIECE, PIECE) and peers == 20
    else:
        assert geometry is None and peers == 0

