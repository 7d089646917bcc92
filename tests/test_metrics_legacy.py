"""Every legacy series of METRICS-AND-HELM.md §5 on /metrics after a real swarm and its /task/metrics
reports, with its exact name, type and labels; the cluster-wide gauges equal on two replicas; the byte
split by source class equal to the bytes the emulated dfgets moved.

One module-scoped cluster (two replicas and a Celery seed worker on the real Redis) and one swarm,
shared by every test here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.protocol.pieces import FRAME_OVERHEAD
from app.swarm.result import CDN_CID_PREFIX, DfgetResult
from app.swarm.swarm import Swarm
from tests.cluster import Cluster
from tests.conftest import BROKER_DB, REDIS_BASE, STATE_DB
from tests.sources import SourceProcess

pytestmark = pytest.mark.slow

SIZE = 9 * 1024 * 1024 + 12345  # three 4 MiB pieces, the last one short
PEERS = 6
CALL_SYSTEM = "metrics-test"
FAILED_REPORT = (b'{"IP":"127.0.0.9","callSystem":"metrics-test","cID":"127.0.0.9-1-1.000","duration":2.5,'
                 b'"port":15001,"taskId":"' + b"a" * 64 + b'","backsourceReason":"3"}')

# name -> (type, label names), exactly as the Go supernode (v1.0.6) exports them.
LEGACY: dict[str, tuple[str, set[str]]] = {
    "dragonfly_supernode_build_info": ("gauge", {"version", "revision", "os", "arch", "goversion"}),
    "dragonfly_supernode_http_requests": ("counter", {"code", "handler"}),
    "dragonfly_supernode_http_request_duration_seconds": ("histogram", {"handler"}),
    "dragonfly_supernode_http_request_size_bytes": ("histogram", {"handler"}),
    "dragonfly_supernode_http_response_size_bytes": ("histogram", {"handler"}),
    "dragonfly_supernode_pieces_downloaded_size_bytes": ("counter", set()),
    "dragonfly_supernode_peers": ("gauge", {"peer"}),
    "dragonfly_supernode_tasks": ("gauge", {"cdnstatus"}),
    "dragonfly_supernode_tasks_registered": ("counter", set()),
    "dragonfly_supernode_cdn_trigger": ("counter", set()),
    "dragonfly_supernode_cdn_trigger_failed": ("counter", set()),
    "dragonfly_supernode_schedule_duration_milliseconds": ("histogram", {"peer"}),
    "dragonfly_supernode_dfgettasks": ("gauge", {"callsystem", "status"}),
    "dragonfly_supernode_dfgettasks_registered": ("counter", {"callsystem"}),
    "dragonfly_supernode_dfgettasks_failed": ("counter", {"callsystem"}),
    "dragonfly_supernode_cdn_cache_hit": ("counter", set()),
    "dragonfly_supernode_cdn_download": ("counter", set()),
    "dragonfly_supernode_cdn_download_failed": ("counter", set()),
    "dragonfly_supernode_gc_peers": ("counter", set()),
    "dragonfly_supernode_gc_tasks": ("counter", set()),
    "dragonfly_supernode_gc_disks": ("counter", set()),
    "dragonfly_supernode_last_gc_disks_timestamp_seconds": ("gauge", set()),
    "dragonfly_dfget_download_duration_seconds": ("histogram", {"callsystem", "peer"}),
    "dragonfly_dfget_download_size_bytes": ("counter", {"callsystem", "peer"}),
    "dragonfly_dfget_download": ("counter", {"callsystem", "peer"}),
    "dragonfly_dfget_download_failed": ("counter", {"callsystem", "peer", "reason"}),
}


@dataclass
class Run:
    cluster: Cluster
    results: list[DfgetResult]
    sha256: str
    api: list[str]


def scrape(api: str) -> dict[str, tuple[str, list[Sample]]]:
    text = httpx.get(f"{api}/metrics", timeout=10).text
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def value(families: dict[str, tuple[str, list[Sample]]], family: str, sample: str, **labels: str) -> float:
    return sum(s.value for s in families.get(family, ("", []))[1]
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


Families = dict[str, tuple[str, list[Sample]]]


def settled(api: str, done: Callable[[Families], bool]) -> Families:
    """The scrape once ``done`` holds: cluster-wide series show the gauge loop's last snapshot, a moment
    behind the state."""
    deadline = time.monotonic() + 10
    while True:
        families = scrape(api)
        if done(families) or time.monotonic() > deadline:
            return families
        time.sleep(0.1)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("metrics")
    url, broker = f"{REDIS_BASE}/{STATE_DB}", f"{REDIS_BASE}/{BROKER_DB}"
    state = redis.Redis.from_url(url)
    state.flushdb()
    redis.Redis.from_url(broker).flushdb()
    data = os.urandom(SIZE)
    (work / "blob.bin").write_bytes(data)
    cluster = Cluster(work / "cluster", url, broker, extra_env={"DF_GAUGE_REFRESH_SECONDS": "0.2",
                                                                 "DF_PIECE_LEASE_SECONDS": "900"})
    cluster.workdir.mkdir()
    try:
        cluster.start_worker()  # first: the replicas' first worker ping (then every 30 s) finds it
        cluster.start_replica()
        cluster.start_replica()
        nodes = [r.node for r in cluster.replicas]
        with SourceProcess({"blob.bin": work / "blob.bin"}) as source:

            async def swarm() -> list[DfgetResult]:
                async with Swarm(PEERS, nodes, source.url("blob.bin"), work / "out", sleep_scale=0.25,
                                 versions=["1.0.6", "0.4.1"], call_system=CALL_SYSTEM) as peers:
                    return await peers.run()

            results = asyncio.run(swarm())
        # A 1.0.x dfget whose download failed (reason 3: download error), sent as dfget sends it.
        failure = httpx.post(f"http://{nodes[1]}/task/metrics", content=FAILED_REPORT,
                             headers={"content-type": "application/json;charset=utf-8"}, timeout=10)
        assert failure.json() == {"code": 1}
        yield Run(cluster, results, hashlib.sha256(data).hexdigest(), [f"http://{n}" for n in nodes])
    finally:
        cluster.stop()
        state.flushdb()


def test_the_swarm_downloaded(run: Run) -> None:
    for result in run.results:
        assert result.success and result.sha256 == run.sha256, (result.error, result.traceback)
        assert not result.back_sourced


def test_every_legacy_series_has_its_exact_name_type_and_labels(run: Run) -> None:
    union: dict[str, tuple[str, list[Sample]]] = {}
    for api in run.api:
        for name, (kind, found) in scrape(api).items():
            union[name] = (kind, union.get(name, (kind, []))[1] + found)
    for name, (kind, labels) in LEGACY.items():
        assert name in union, f"{name} is not exported"
        assert union[name][0] == kind, (name, union[name][0])
        found = union[name][1]
        assert found, f"{name} has no sample"
        for sample in found:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    # What the swarm did, in the series it feeds (counters summed over the replicas, as Prometheus does).
    fams = [scrape(api) for api in run.api]

    def total(family: str, sample: str, **labels: str) -> float:
        return sum(value(f, family, sample, **labels) for f in fams)

    attempts = sum(r.register_attempts for r in run.results)
    assert total("dragonfly_supernode_tasks_registered", "dragonfly_supernode_tasks_registered_total") == attempts
    assert total("dragonfly_supernode_dfgettasks_registered", "dragonfly_supernode_dfgettasks_registered_total",
                 callsystem=CALL_SYSTEM) == attempts
    refused = sum(1 for r in run.results for e in r.exchanges if e.endpoint == "/peer/registry" and e.code != 200)
    assert total("dragonfly_supernode_dfgettasks_failed", "dragonfly_supernode_dfgettasks_failed_total",
                 callsystem=CALL_SYSTEM) == refused
    reporters = (PEERS + 1) // 2  # the 1.0.6 half reports each download once (we answer code 1)
    assert total("dragonfly_dfget_download", "dragonfly_dfget_download_total", callsystem=CALL_SYSTEM,
                 peer="") == reporters + 1
    assert total("dragonfly_dfget_download_failed", "dragonfly_dfget_download_failed_total", callsystem=CALL_SYSTEM,
                 peer="", reason="3") == 1
    assert total("dragonfly_dfget_download_size_bytes", "dragonfly_dfget_download_size_bytes_total",
                 callsystem=CALL_SYSTEM) == reporters * SIZE
    assert total("dragonfly_dfget_download_duration_seconds", "dragonfly_dfget_download_duration_seconds_count",
                 callsystem=CALL_SYSTEM) == reporters
    reported = [parse_qs(urlsplit(e.target).query) for r in run.results for e in r.exchanges
                if e.endpoint == "/peer/piece/suc" and e.http_status == 200]
    cdn_bytes = sum(_range_bytes(q["pieceRange"][0]) for q in reported if q["dstCid"][0].startswith(CDN_CID_PREFIX))
    assert cdn_bytes > 0
    assert total("dragonfly_supernode_pieces_downloaded_size_bytes",
                 "dragonfly_supernode_pieces_downloaded_size_bytes_total") == cdn_bytes
    pulls = sum(r.pulls for r in run.results)
    assert total("dragonfly_supernode_schedule_duration_milliseconds",
                 "dragonfly_supernode_schedule_duration_milliseconds_count", peer="") == pulls
    for api in run.api:  # the seed job counts are cluster-wide (the job may run anywhere): each replica shows all
        seeds = settled(api, lambda f: value(f, "dragonfly_supernode_cdn_trigger",
                                             "dragonfly_supernode_cdn_trigger_total") == 1)
        assert value(seeds, "dragonfly_supernode_cdn_download", "dragonfly_supernode_cdn_download_total") == 1
        assert value(seeds, "dragonfly_supernode_cdn_trigger_failed",
                     "dragonfly_supernode_cdn_trigger_failed_total") == 0
    buckets = {s.labels["le"] for s in fams[0]["dragonfly_supernode_schedule_duration_milliseconds"][1]
               if s.name.endswith("_bucket")}
    assert buckets == {"0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "+Inf"}
    buckets = {s.labels["le"] for s in fams[0]["dragonfly_dfget_download_duration_seconds"][1]
               if s.name.endswith("_bucket")}
    assert buckets == {"10.0", "30.0", "60.0", "120.0", "300.0", "600.0", "+Inf"}


def _range_bytes(piece_range: str) -> int:
    start, _, end = piece_range.partition("-")
    return int(end) - int(start) + 1


def _gauges(api: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    shared = ("dragonfly_supernode_peers", "dragonfly_supernode_dfgettasks", "dragonfly_supernode_tasks",
              "dragonfly_supernode_served_bytes", "dragonfly_supernode_replicas", "dragonfly_supernode_audit_backlog",
              "dragonfly_supernode_cdn_trigger", "dragonfly_supernode_cdn_download",
              "dragonfly_supernode_cdn_cache_hit", "dragonfly_supernode_seed_workers")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for name, (_, found) in scrape(api).items() if name in shared for s in found}


def test_cluster_gauges_are_the_same_on_both_replicas(run: Run) -> None:
    deadline = time.monotonic() + 10
    while True:  # each replica refreshes on its own clock: poll until both show the settled state
        first, second = (_gauges(api) for api in run.api)
        settled = first.get(("dragonfly_supernode_replicas", ())) == 2
        if (first == second and settled) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert first == second
    assert first[("dragonfly_supernode_replicas", ())] == 2
    assert first[("dragonfly_supernode_seed_workers", ())] == 1
    assert first[("dragonfly_supernode_tasks", (("cdnstatus", "SUCCESS"),))] == 1
    done = (("callsystem", CALL_SYSTEM), ("status", "SUCCESS"))
    assert first[("dragonfly_supernode_dfgettasks", done)] == PEERS
    assert first[("dragonfly_supernode_audit_backlog", ())] > 0  # no database here: the seed events wait
    # One record per registration plus each replica's own seed-cache peer record.
    assert first[("dragonfly_supernode_peers", (("peer", ""),))] >= PEERS


def _framed_bytes(piece_range: str, piece_size: int) -> int:
    """The bytes a piece fetch moved: the range names a whole piece, the last one is shorter."""
    payload = piece_size - FRAME_OVERHEAD
    number = int(piece_range.partition("-")[0]) // piece_size
    return min(payload, SIZE - number * payload) + FRAME_OVERHEAD


CLUSTER_WIDE = {f"dragonfly_supernode_{name}" for name in (
    "tasks", "seeding_bytes", "seeding_total_bytes", "preheats", "peers", "dfgettasks", "served_bytes",
    "task_served_bytes", "replicas", "seed_workers", "audit_backlog", "cdn_trigger", "cdn_trigger_failed",
    "cdn_cache_hit", "cdn_download", "cdn_download_failed")}


def test_help_texts_say_which_series_are_the_same_on_every_replica(run: Run) -> None:
    text = httpx.get(f"{run.api[0]}/metrics", timeout=10).text
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert CLUSTER_WIDE <= set(helps)
    for name, doc in helps.items():
        if name.startswith(("dragonfly_supernode_", "dragonfly_dfget_")):
            assert ("same on every replica" in doc) == (name in CLUSTER_WIDE), (name, doc)


def test_the_byte_split_adds_up_to_what_the_emulator_moved(run: Run) -> None:
    moved = {"peer": 0, "seed": 0}
    for result in run.results:
        got = 0
        for fetch in result.piece_fetches:
            if fetch.ok:
                size = _framed_bytes(fetch.range, result.piece_size)
                moved["seed" if fetch.src_cid.startswith(CDN_CID_PREFIX) else "peer"] += size
                got += size - FRAME_OVERHEAD
        assert got == SIZE  # every piece fetched once: the fetches are the whole file
    assert moved["peer"] > 0 and moved["seed"] > 0
    for api in run.api:
        fams = scrape(api)
        split = {k: value(fams, "dragonfly_supernode_served_bytes", "dragonfly_supernode_served_bytes_total",
                          source=k) for k in ("peer", "seed", "source")}
        assert split == {"peer": moved["peer"], "seed": moved["seed"], "source": 0}
        (tid,) = {r.task_id for r in run.results}
        per_task = {k: value(fams, "dragonfly_supernode_task_served_bytes",
                             "dragonfly_supernode_task_served_bytes_total", task=tid, source=k) for k in split}
        assert per_task == split  # the only task: its split is the cluster's


# --- the Grafana board and the alert rules query only what /metrics exports ---------------------------

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "df-supernode.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# The series Prometheus makes itself: every other name must be exported.
NOT_FROM_METRICS = {"up": "Prometheus' own scrape health"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers left once strings, label matchers {...},
    ranges and subqueries [...], grouping label lists and function/aggregation calls are taken out."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LIST.sub("", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _KEYWORDS}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_promql_name_parser() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (handler, le) (rate(a_bucket{code=~"5..", x="y(z)"}[5m]))) / b'
        ' and on(instance) deriv(max(c)[15m:1m]) > 10e6 unless d offset 5m'
    ) == {"a_bucket", "b", "c", "d"}
    assert promql_metric_names('sum without (source) (x_total{source="peer"})') == {"x_total"}


def test_every_name_in_the_dashboard_and_the_alerts_is_exported(run: Run) -> None:
    exported = {s.name for api in run.api for _, found in scrape(api).values() for s in found}
    board, alerts = dashboard_exprs(), alert_exprs()
    assert len(board) >= 20 and len(alerts) >= 8
    used = set().union(*(promql_metric_names(e) for e in board + alerts))
    missing = used - exported - set(NOT_FROM_METRICS)
    assert not missing, f"queried but not on /metrics: {sorted(missing)}"
    # The panels the issue names are there.
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for needed in ("p2p ratio", "throughput by source", "request rate by handler", "latency", "seed progress",
                   "5xx", "replicas", "seed workers"):
        assert needed in titles, needed


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (tests/services/promtool.sh)")
def test_promtool_accepts_the_alerts_and_every_dashboard_query(tmp_path: Path) -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The board's queries, as recording rules: promtool parses each (Grafana's interval variable set).
    rules = {"groups": [{"name": "board", "rules": [
        {"record": f"board:query{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "board.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
