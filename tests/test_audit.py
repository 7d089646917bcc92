"""The audit log: Redis stream -> consumer -> Postgres (or SQLite), and ``GET /api/v1/audit``.

Real Postgres (a database of its own per test, created and dropped here), real Redis, real HTTP; no
mocks. The admin URL comes from ``DF_TEST_POSTGRES`` (tests/services/postgres.sh makes sure the default
one is up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.db import AuditNotConfigured, create_engine, database_url
from app.audit.events import AuditEvent, RedisAuditLog
from app.audit.migrate import upgrade_to_head
from app.audit.models import Base
from app.audit.rows import to_row
from app.audit.writer import AuditWriter, insert_statement
from app.core.config import Settings
from app.protocol.taskid import task_id
from app.state.schema import AUDIT_GROUP, AUDIT_STREAM
from tests.cluster import REPO, TEST_TOKEN
from tests.live import Live, live_supernode
from tests.postgres import admin_connection, plain_url, rows
from tests.sources import SourceServer
from tests.test_bridge import registration

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


# --- fixtures and helpers ---------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def table_ready(url: str) -> bool:
    try:
        return bool(await rows(url, "SELECT 1 FROM pg_tables WHERE tablename = 'audit_events'"))
    except (OSError, asyncpg.PostgresError):
        return False


async def drained(redis: Redis) -> bool:
    """Every buffered event committed, acknowledged and deleted from the stream."""
    try:
        pending: dict[str, Any] = await redis.xpending(AUDIT_STREAM, AUDIT_GROUP)
    except ResponseError:  # no consumer has created the group yet
        return False
    return await redis.xlen(AUDIT_STREAM) == 0 and pending["pending"] == 0


def api(live: Live, auth: bool = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=live.api, headers=AUTH if auth else {}, timeout=10)


async def register(http: httpx.AsyncClient, url: str, cid: str, ip: str = "127.0.0.1") -> None:
    answer = (await http.post("/peer/registry", json=registration(url, cid) | {"ip": ip})).json()
    assert answer["code"] == 200, answer


# --- events from the dfget path, the seeder and the admin API --------------------------------------------


async def test_registrations_seeds_and_admin_calls_land_in_postgres_exactly_once(
    settings: Settings, redis: Redis, pg_db: str
) -> None:
    settings = settings.model_copy(update={"database_url": pg_db})
    data = os.urandom(200_000)
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("a.bin", data)
        source.add("b.bin", b"x" * 1000)
        url_a, url_b = source.url("a.bin"), source.url("b.bin")
        await register(http, url_a, "10.0.0.1-1-1.000", "10.0.0.1")
        await register(http, url_a, "10.0.0.2-2-2.000", "10.0.0.2")  # same task: a peer, no second task.created
        await register(http, url_b, "10.0.0.1-1-1.001", "10.0.0.1")
        tid_a, tid_b = task_id(url_a), task_id(url_b)
        down = await http.get("/peer/service/down", params={"taskId": tid_a, "cid": "10.0.0.2-2-2.000"})
        assert down.json()["code"] == 612
        await eventually(
            lambda: _count(pg_db, "seed.finished", 2), what="both seeds to finish and be written"
        )
        assert (await http.delete(f"/api/v1/tasks/{tid_b}")).status_code == 200
        await eventually(lambda: _count(pg_db, "task.deleted", 1), what="the admin delete")
        await eventually(lambda: drained(redis), what="the stream to drain")

    found = await rows(pg_db, "SELECT * FROM audit_events ORDER BY id")
    by_action: dict[str, list[asyncpg.Record]] = {}
    for row in found:
        by_action.setdefault(row["action"], []).append(row)
    assert {a: len(r) for a, r in by_action.items()} == {
        "task.created": 2, "peer.registered": 3, "seed.started": 2, "seed.finished": 2, "peer.gone": 1,
        "task.deleted": 1,
    }
    assert len({row["stream_id"] for row in found}) == len(found)
    created = {row["task_id"]: row for row in by_action["task.created"]}
    assert set(created) == {tid_a, tid_b}
    assert created[tid_a]["actor"] == "dfget" and created[tid_a]["source_ip"] == "10.0.0.1"
    assert created[tid_a]["target"] == url_a and created[tid_a]["at"].tzinfo is not None
    finished = next(row for row in by_action["seed.finished"] if row["task_id"] == tid_a)
    detail = _json(finished["detail"])
    assert finished["actor"] == "seeder" and detail["bytes"] == len(data) and detail["durationMs"] >= 0
    registered = [_json(row["detail"]) for row in by_action["peer.registered"] if row["task_id"] == tid_a]
    assert sorted(d["newTask"] for d in registered) == [False, True]
    (gone,) = by_action["peer.gone"]
    assert (gone["task_id"], gone["target"], gone["outcome"]) == (tid_a, "10.0.0.2-2-2.000", "ok")
    (deleted,) = by_action["task.deleted"]
    assert (deleted["actor"], deleted["task_id"], deleted["source_ip"]) == ("tests", tid_b, "127.0.0.1")


async def _count(url: str, action: str, wanted: int) -> bool:
    if not await table_ready(url):
        return False
    return len(await rows(url, "SELECT 1 FROM audit_events WHERE action = $1", action)) >= wanted


def _json(value: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(value) if isinstance(value, str) else value
    return loaded


# --- exactly once: redelivery and dead consumers -----------------------------------------------------------


async def test_redelivered_and_taken_over_entries_are_written_exactly_once(redis: Redis, pg_db: str) -> None:
    log = RedisAuditLog(redis, 10_000)
    for n in range(10):
        await log.record(AuditEvent(actor="tests", action="task.created", task_id=f"t{n}"))
    engine = create_engine(make_url(pg_db))
    try:
        await upgrade_to_head(engine)
        # A consumer that took 6 entries, committed the first 3 and died before XACK: the 3 are in the
        # table and all 6 are still pending for it.
        await redis.xgroup_create(AUDIT_STREAM, AUDIT_GROUP, id="0", mkstream=True)
        reply = await redis.xreadgroup(AUDIT_GROUP, "dead", {AUDIT_STREAM: ">"}, count=6)
        taken = reply[0][1]
        async with engine.begin() as conn:
            await conn.execute(insert_statement("postgresql"), [to_row(i, f) for i, f in taken[:3]])
        writer = AuditWriter(redis, engine, "alive", claim_idle_ms=0, claim_every=0.2)
        running = asyncio.create_task(writer.run())
        try:
            await eventually(lambda: drained(redis), what="the stream to drain")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    finally:
        await engine.dispose()
    found = await rows(pg_db, "SELECT task_id, stream_id FROM audit_events")
    assert sorted(r["task_id"] for r in found) == [f"t{n}" for n in range(10)]
    assert len({r["stream_id"] for r in found}) == 10


async def test_a_malformed_entry_is_kept_as_invalid_and_does_not_block_the_log(redis: Redis, pg_db: str) -> None:
    await redis.xadd(AUDIT_STREAM, {"event": "{not json"})
    await redis.xadd(AUDIT_STREAM, {"event": '{"actor": "x\\u0000y", "action": "a", "at_ms": 1000}'})
    engine = create_engine(make_url(pg_db))
    running = asyncio.create_task(AuditWriter(redis, engine, "c").run())
    try:
        await eventually(lambda: drained(redis), what="the stream to drain")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await engine.dispose()
    found = await rows(pg_db, "SELECT action, actor, outcome FROM audit_events ORDER BY id")
    assert [tuple(r) for r in found] == [("audit.invalid", "", "failed"), ("a", "xy", "ok")]


# --- the outage --------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_audit_survives_a_postgres_outage(
    settings: Settings, redis: Redis, pg_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """100 tasks are created while the audit database refuses every connection; once it is back, every
    event is in the table exactly once."""
    caplog.set_level(logging.WARNING, logger="app.audit.writer")
    settings = settings.model_copy(update={"database_url": pg_db})
    db_name = make_url(pg_db).database
    admin = await admin_connection()
    urls: list[str] = []

    async def create_tasks(first: int, last: int) -> None:
        async def one(n: int) -> None:
            await register(http, urls[n], f"10.1.{n // 250}.{n % 250}-{n}-1.000")

        for start in range(first, last, 10):
            await asyncio.gather(*(one(n) for n in range(start, min(start + 10, last))))

    try:
        async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
            for n in range(100):
                source.add(f"f{n}.bin", os.urandom(2048))
                urls.append(source.url(f"f{n}.bin"))
            await create_tasks(0, 20)
            await eventually(lambda: _count(pg_db, "task.created", 20), what="the first 20 tasks in the table")

            # The outage: no new connections to this database, and every open one is cut.
            await admin.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db_name)
            await create_tasks(20, 100)
            await asyncio.sleep(2.0)
            # Nothing of it could be written: it is all still buffered in the stream.
            assert await redis.xlen(AUDIT_STREAM) >= 80
            assert "failed" in caplog.text

            await admin.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS true')
            await eventually(lambda: _count(pg_db, "seed.finished", 100), within=60, what="every event after")
            await eventually(lambda: drained(redis), within=30, what="the stream to drain")
    finally:
        await admin.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS true')
        await admin.close()

    tids = {task_id(url) for url in urls}
    counts = await rows(pg_db, "SELECT action, count(*) AS n, count(DISTINCT task_id) AS tasks "
                               "FROM audit_events GROUP BY action")
    assert {r["action"]: (r["n"], r["tasks"]) for r in counts} == {
        "task.created": (100, 100), "peer.registered": (100, 100), "seed.started": (100, 100),
        "seed.finished": (100, 100),
    }
    created = await rows(pg_db, "SELECT task_id FROM audit_events WHERE action = 'task.created'")
    assert {r["task_id"] for r in created} == tids


# --- migrations on both databases ----------------------------------------------------------------------------


def _diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _check_schema(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)
    await upgrade_to_head(engine)  # a second replica starting finds the schema at head
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one() == "0001_audit_events"
    async with engine.begin() as conn:
        await conn.execute(insert_statement(engine.dialect.name), [to_row("1-0", {"event": '{"at_ms": 1}'})])
    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))


async def test_sqlite_and_postgres_run_the_same_migration_and_it_matches_the_models(
    tmp_path: Path, pg_db: str
) -> None:
    embedded = Settings(redis_url="", home=tmp_path / "home", advertise_ip="127.0.0.1")
    sqlite_url = database_url(embedded)
    assert sqlite_url.drivername == "sqlite+aiosqlite" and sqlite_url.database == str(tmp_path / "home" / "audit.db")
    plain = Settings(redis_url="redis://x", database_url=plain_url(pg_db), advertise_ip="127.0.0.1")
    assert database_url(plain).drivername == "postgresql+asyncpg"
    for url in (sqlite_url, make_url(pg_db)):
        engine = create_engine(url)
        try:
            await _check_schema(engine)
        finally:
            await engine.dispose()


async def test_concurrent_replicas_migrate_postgres_once(pg_db: str) -> None:
    engines = [create_engine(make_url(pg_db)) for _ in range(4)]
    try:
        await asyncio.gather(*(upgrade_to_head(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert [r["version_num"] for r in await rows(pg_db, "SELECT version_num FROM alembic_version")] == [
        "0001_audit_events"
    ]


async def test_alembic_command_line_migrates_the_configured_database(pg_db: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    env |= {"DF_REDIS_URL": "redis://127.0.0.1:1/0", "DF_DATABASE_URL": plain_url(pg_db)}
    done = await asyncio.to_thread(
        subprocess.run, [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert await table_ready(pg_db)


# --- embedded mode and the standalone consumer ----------------------------------------------------------------


async def test_embedded_mode_keeps_the_audit_log_in_sqlite(tmp_path: Path) -> None:
    settings = Settings(redis_url="", home=tmp_path / "home", advertise_ip="127.0.0.1",
                        source_allowlist="127.0.0.0/8")
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn, auth=False) as http:
        source.add("e.bin", b"e" * 5000)
        await register(http, source.url("e.bin"), "127.0.0.1-9-9.000")
        tid = task_id(source.url("e.bin"))

        async def seeded() -> bool:
            page = (await http.get("/api/v1/audit", params={"task_id": tid, "action": "seed.finished"})).json()
            return bool(page["total"] == 1)

        await eventually(seeded, what="the embedded consumer to write the seed")
        page = (await http.get("/api/v1/audit", params={"task_id": tid})).json()
        database = (await http.get("/api/v1/cluster")).json()["database"]
    assert {e["action"] for e in page["events"]} == {"task.created", "peer.registered", "seed.started",
                                                     "seed.finished"}
    assert (tmp_path / "home" / "audit.db").is_file()
    assert database["status"] == "sqlite" and database["ok"] is True and database["url"].endswith("audit.db")


async def test_the_standalone_consumer_process(redis: Redis, redis_url: str, pg_db: str, tmp_path: Path) -> None:
    log = RedisAuditLog(redis, 10_000)
    for n in range(5):
        await log.record(AuditEvent(actor="tests", action="preheat.created", target=f"p{n}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    env |= {"DF_REDIS_URL": redis_url, "DF_DATABASE_URL": pg_db, "DF_HOME": str(tmp_path)}
    output = tmp_path / "consumer.log"
    proc = _spawn([sys.executable, "-m", "workers.audit", "--name", "standalone"], env, output)
    try:
        await eventually(lambda: _count(pg_db, "preheat.created", 5), what=f"the consumer: {output.read_text()}")
        await eventually(lambda: drained(redis), what="the stream to drain")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
    assert code == 0, output.read_text()
    assert "audit consumer standalone stopped" in output.read_text()


def _spawn(command: list[str], env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with open(output, "wb") as handle:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


# --- the query API ---------------------------------------------------------------------------------------------


T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


async def test_query_filters_pagination_and_errors(settings: Settings, redis: Redis, pg_db: str) -> None:
    log = RedisAuditLog(redis, 10_000)
    for n in range(30):
        await log.record(AuditEvent(
            actor="alice" if n % 3 == 0 else "dfget", action="task.deleted" if n % 3 == 0 else "peer.registered",
            task_id=f"task{n % 5}", target=f"target{n}", source_ip="10.0.0.9", detail={"n": n},
            at_ms=T0 + n * 60_000,
        ))
    settings = settings.model_copy(update={"database_url": pg_db})
    async with live_supernode(settings) as sn, api(sn) as http:
        await eventually(lambda: drained(redis), what="the stream to drain")

        async def get(**params: Any) -> dict[str, Any]:
            answer = await http.get("/api/v1/audit", params=params)
            assert answer.status_code == 200, answer.text
            page: dict[str, Any] = answer.json()
            return page

        everything = await get(limit=1000)
        assert everything["total"] == 30 and [e["detail"]["n"] for e in everything["events"]] == list(range(29, -1, -1))
        first = everything["events"][-1]
        assert first["at"] == "2025-11-24T16:00:00.000Z" and first["actor"] == "alice"
        assert (first["taskId"], first["target"], first["sourceIp"], first["outcome"]) == (
            "task0", "target0", "10.0.0.9", "ok")

        alice = await get(actor="alice")
        assert alice["total"] == 10 and {e["action"] for e in alice["events"]} == {"task.deleted"}
        assert (await get(action="peer.registered"))["total"] == 20
        assert [e["detail"]["n"] for e in (await get(task_id="task1"))["events"]] == [26, 21, 16, 11, 6, 1]
        assert (await get(task_id="task1", actor="alice"))["total"] == 2  # n = 6, 21
        # since inclusive, until exclusive; RFC3339 with any offset, or epoch ms.
        window = await get(since="2025-11-24T16:10:00Z", until=str(T0 + 20 * 60_000))
        assert [e["detail"]["n"] for e in window["events"]] == list(range(19, 9, -1))
        shifted = await get(since="2025-11-24T17:10:00+01:00", until="2025-11-24T16:20:00")
        assert shifted["total"] == 10
        page = await get(limit=7, offset=7)
        assert (page["total"], page["limit"], page["offset"]) == (30, 7, 7)
        assert [e["detail"]["n"] for e in page["events"]] == list(range(22, 15, -1))
        assert (await get(actor="nobody"))["events"] == []

        for params in ({"since": "yesterday"}, {"until": "2025-13-01T00:00:00Z"}, {"since": "99999999999999999"},
                       {"limit": "0"}, {"limit": "1001"}, {"offset": "-1"}, {"actor": "a\x00b"}):
            bad = await http.get("/api/v1/audit", params=params)
            assert bad.status_code == 400, (params, bad.text)
            body = bad.json()
            assert set(body) == {"code", "message"} and body["code"] == 400 and body["message"]
        async with api(sn, auth=False) as anonymous:
            missing = await anonymous.get("/api/v1/audit")
            wrong = await anonymous.get("/api/v1/audit", headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, missing.json()["code"]) == (401, 401)
    assert (wrong.status_code, wrong.json()) == (403, {"code": 403, "message": "invalid token"})


async def test_query_with_the_database_down_is_a_503_in_the_error_shape(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": "postgresql://u:pw@127.0.0.1:1/db"})
    async with live_supernode(broken) as sn, api(sn) as http:
        answer = await http.get("/api/v1/audit")
    assert answer.status_code == 503 and answer.json()["code"] == 503 and "pw" not in answer.text


async def test_cluster_mode_without_a_database_url_keeps_events_in_redis_and_says_why(settings: Settings) -> None:
    """No per-replica SQLite in cluster mode: the log would be split over hosts."""
    unset = settings.model_copy(update={"database_url": ""})
    assert not unset.embedded
    with pytest.raises(AuditNotConfigured):
        database_url(unset)
    async with live_supernode(unset) as sn, api(sn) as http:
        answer = await http.get("/api/v1/audit")
        health = (await http.get("/api/v1/cluster")).json()
    assert answer.status_code == 503 and "DF_DATABASE_URL is empty" in answer.json()["message"]
    assert health["database"]["status"] == "not configured" and health["database"]["ok"] is False
