"""DF_LOG_FORMAT=json: a real replica process writes one JSON object per line, each line of a request
carries the request id its answer's X-Request-Id names (an incoming sane id is kept), and secrets in
URLs and tracebacks never reach the log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from app.api.requestid import choose_id
from app.core.config import Settings
from app.core.logjson import JsonFormatter, request_id
from tests.cluster import Cluster, Proc
from tests.conftest import BROKER_DB, REDIS_BASE, STATE_DB
from tests.live import live_supernode
from tests.test_bridge import registration

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2-s3cr3t"
REFUSED_URL = f"http://admin:{SECRET}@169.254.169.254/latest/meta-data/?X-Amz-Signature={SECRET}"


def test_the_formatter_writes_one_masked_object_per_record() -> None:
    logger = logging.getLogger("tests.logjson")
    try:
        raise ValueError(f"cannot fetch {REFUSED_URL}\nsecond line")
    except ValueError:
        record = logger.makeRecord("tests.logjson", logging.ERROR, __file__, 1, "fetch %s failed", (REFUSED_URL,),
                                   sys.exc_info())
    token = request_id.set("abc-123")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id.reset(token)
    assert "\n" not in line and SECRET not in line
    out = json.loads(line)
    assert out["request_id"] == "abc-123" and out["level"] == "ERROR" and out["logger"] == "tests.logjson"
    assert out["msg"].startswith("fetch http://") and "ValueError" in out["exc"]
    assert out["ts"].endswith("Z") and len(out["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_an_incoming_request_id_is_kept_only_when_it_looks_like_one() -> None:
    assert choose_id("req-1.2:3_x") == "req-1.2:3_x"
    for bad in ("", "a" * 129, "two words", "x\r\ny", "é"):
        fresh = choose_id(bad)
        assert fresh != bad and len(fresh) == 32 and fresh.isalnum()
    assert choose_id(None) != choose_id(None)


async def test_every_answer_names_its_request_id_in_json_mode_only(settings: Settings, redis: Redis) -> None:
    json_mode = settings.model_copy(update={"log_format": "json"})
    async with live_supernode(json_mode) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        kept = await http.get("/_ping", headers={"X-Request-Id": "from-the-lb-42"})
        fresh = await http.get("/_ping", headers={"X-Request-Id": "no spaces allowed"})
        dfget = await http.post("/task/metrics", content=b"{}", headers={"content-type": "application/json"})
        none = await http.get("/no/such/route")
    assert kept.headers["x-request-id"] == "from-the-lb-42"
    assert fresh.headers["x-request-id"] not in ("", "no spaces allowed")
    assert dfget.json() == {"code": 1} and dfget.headers["x-request-id"]
    assert none.status_code == 404 and none.headers["x-request-id"]
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        text_mode = await http.get("/_ping")
    assert "x-request-id" not in text_mode.headers  # text logs: dfget's answers stay exactly as they were


@pytest.fixture(scope="module")
def json_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("logs")
    cluster = Cluster(work / "cluster", f"{REDIS_BASE}/{STATE_DB}", None, extra_env={"DF_LOG_FORMAT": "json"})
    cluster.workdir.mkdir()
    try:
        cluster.start_replica()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_a_replica_process_logs_json_lines_with_request_ids(json_replica: Cluster) -> None:
    replica = json_replica.replicas[0]
    api = f"http://{replica.node}"
    body = registration(REFUSED_URL) | {"callSystem": "logs-test"}
    answer = httpx.post(f"{api}/peer/registry", json=body, headers={"X-Request-Id": "reg-refused-1"}, timeout=10)
    assert answer.json()["code"] != 200 and answer.headers["x-request-id"] == "reg-refused-1"
    log: Path = replica.log
    deadline = time.monotonic() + 10
    while True:  # the record is written before the answer; the file may lag a moment behind the pipe
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        mine = [json.loads(line) for line in lines if '"reg-refused-1"' in line]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine, log.read_text()[-3000:]
    assert all(record["request_id"] == "reg-refused-1" for record in mine)
    assert any("169.254.169.254" in record["msg"] for record in mine), mine
    parsed = [json.loads(line) for line in lines]  # every line of the process, startup included, is JSON
    assert all({"ts", "level", "logger", "msg"} <= set(record) for record in parsed)
    assert any(record["logger"].startswith("uvicorn") for record in parsed)  # uvicorn's own records too
    assert SECRET not in log.read_text()


@pytest.mark.slow
def test_a_celery_worker_logs_json_lines_too(json_replica: Cluster, tmp_path: Path) -> None:
    """``celery --quiet`` (no printed banner) with DF_LOG_FORMAT=json: Celery's records, the worker's
    and the redirected prints, one JSON object per line."""
    broker = f"{REDIS_BASE}/{BROKER_DB}"
    env = json_replica.env() | {"DF_BROKER_URL": broker}
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "--quiet", "-A", "workers.tasks", "worker", "-Q", "df-seed",
               "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
               "--hostname", "json@%h"]
    with log.open("wb") as out:
        popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    worker = Proc("json-worker", popen, log)
    try:
        deadline = time.monotonic() + 30
        while "ready." not in log.read_text():
            assert popen.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        # Read while it runs: Celery's shutdown notices ("worker: Warm shutdown") are printed, not logged.
        lines = [line for line in log.read_text().splitlines() if line.strip()]
    finally:
        worker.stop()
    records = [json.loads(line) for line in lines]  # a line that is not JSON fails here
    assert any(r["logger"].startswith("celery") and "ready." in r["msg"] for r in records), records
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
