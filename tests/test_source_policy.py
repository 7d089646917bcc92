"""The source URL policy (SSRF guard): real resolution of literal IPs and /etc/hosts names, redirect
hops, and its use by dfget registrations (an emulated dfget included) and preheats, with the traces
each refusal leaves: the 607 / 400 message, the counter on /metrics, the WARNING line, the audit event
and the task detail. Nothing here ever connects to a refused address: the policy refuses before any
connection is made."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.cdn.policy import RefusalLog, SourcePolicy, SourceRefused, parse_allowlist, parse_denylist, source_policy
from app.cdn.source import make_source_client, probe_source
from app.core.config import Settings
from app.protocol.taskid import task_id
from app.swarm import Swarm
from tests.live import live_supernode
from tests.preheat_support import AUTH, at_least, audit_trail, poll_legacy
from tests.sources import SourceServer

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
POLICY_LOG = "app.cdn.policy"


def policy(allowlist: str = "", denylist: str = "", *, embedded: bool = False, **kw: Any) -> SourcePolicy:
    return SourcePolicy(parse_allowlist(allowlist), parse_denylist(denylist), allow_loopback=embedded, **kw)


async def refused(p: SourcePolicy, url: str) -> SourceRefused:
    with pytest.raises(SourceRefused) as caught:
        await p.check(url)
    return caught.value


# --- the decisions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (METADATA, "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://169.254.170.2/v2/credentials", "metadata"),
        ("http://169.254.10.10/", "link_local"),
        ("http://[fe80::1]/", "link_local"),
        ("http://127.0.0.1:8080/x", "loopback"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 in decimal, as inet_aton reads it
        ("http://localhost:8002/x", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://0.0.0.0/", "special"),  # connects to this host on Linux
        ("http://[::]/", "special"),
        ("http://224.0.0.1/", "special"),  # multicast: Python calls it global
        ("http://240.0.0.1/", "special"),
        ("http://192.0.2.1/", "special"),  # documentation
        ("http://[ff02::1]/", "special"),
        ("http://[2001:db8::1]/", "special"),
        ("file:///etc/passwd", "url"),
        ("ftp://93.184.216.34/x", "url"),
    ],
)
async def test_cluster_defaults_refuse_metadata_link_local_loopback_and_special_addresses(url: str, kind: str) -> None:
    refusal = await refused(policy(), url)
    assert refusal.reason == "forbidden" and refusal.kind == kind, refusal.message


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/", "http://172.16.5.4:5000/v2/", "http://172.31.255.254/", "http://192.168.0.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://[fd12:3456::1]/", "http://[fc00::1]/",
        "http://[64:ff9b::10.1.2.3]/",  # NAT64 of a private address: judged as that address
        "https://93.184.216.34/v2/", "http://[2606:4700::1111]/", "http://[64:ff9b::8.8.8.8]/",
    ],
)
async def test_private_and_public_addresses_are_allowed_by_default(url: str) -> None:
    await policy().check(url)  # literals: resolution sends nothing
    await policy(embedded=True).check(url)


@pytest.mark.parametrize(
    ("url", "form"),
    [
        ("http://[::ffff:169.254.169.254]/", "IPv4-mapped"),
        ("http://[::169.254.169.254]/", "IPv4-compatible"),
        ("http://[::ffff:0:169.254.169.254]/", "IPv4-translated"),
        ("http://[64:ff9b::169.254.169.254]/", "NAT64"),
        ("http://[64:ff9b::a9fe:a9fe]/", "NAT64"),
        ("http://[2002:a9fe:a9fe::]/", "6to4"),  # bits 16..48 are the IPv4 address
        ("http://[2002:a9fe:a9fe:1234::5]/", "6to4"),
        ("http://[2002:a9fe:aa02::]/", "6to4"),  # 169.254.170.2, the ECS credentials endpoint
    ],
)
async def test_every_ipv6_form_embedding_a_metadata_address_is_refused(url: str, form: str) -> None:
    for p in (policy(), policy(embedded=True), policy("0.0.0.0/0,::/0,169.254.0.0/16")):
        refusal = await refused(p, url)
        assert refusal.kind == "metadata" and f"{form} form of 169.254.1" in refusal.message
        assert "never allowed" in refusal.message


async def test_embedded_ipv4_is_judged_by_the_ipv4_address_and_the_lists() -> None:
    assert (await refused(policy(), "http://[2002:7f00:1::]/")).kind == "loopback"  # 6to4 of 127.0.0.1
    assert (await refused(policy(), "http://[::ffff:0:169.254.1.1]/")).kind == "link_local"
    await policy("127.0.0.0/8").check("http://[64:ff9b::127.0.0.1]/")
    await policy(embedded=True).check("http://[::ffff:127.0.0.1]/")
    assert (await refused(policy(denylist="10.0.0.0/8"), "http://[2002:a01:203::]/")).kind == "denylist"


async def test_loopback_is_refused_in_cluster_mode_and_allowed_in_embedded_mode(settings: Settings) -> None:
    cluster = source_policy(settings.model_copy(update={"source_allowlist": ""}))
    embedded = source_policy(settings.model_copy(update={"source_allowlist": "", "redis_url": ""}))
    assert not cluster.allow_loopback and embedded.allow_loopback
    for url in ("http://127.0.0.1:5000/v2/", "http://localhost:8080/f", "http://[::1]/", "http://127.9.9.9/"):
        refusal = await refused(cluster, url)
        assert refusal.kind == "loopback" and "cluster mode" in refusal.message
        assert "DF_SOURCE_ALLOWLIST" in refusal.message
        await embedded.check(url)
    await source_policy(settings).check("http://127.0.0.1:5000/v2/")  # the tests' DF_SOURCE_ALLOWLIST=127.0.0.0/8
    for url, kind in ((METADATA, "metadata"), ("http://169.254.10.10/", "link_local"), ("http://0.0.0.0/", "special")):
        assert (await refused(embedded, url)).kind == kind


async def test_the_denylist_refuses_more_and_a_more_specific_allowlist_entry_wins() -> None:
    internet_facing = policy(denylist="10.0.0.0/8,fc00::/7")
    assert (await refused(internet_facing, "http://10.1.2.3/")).kind == "denylist"
    assert "DF_SOURCE_DENYLIST" in (await refused(internet_facing, "http://[fd00::5]/")).message
    await internet_facing.check("http://192.168.0.1/")
    # An allowlist entry more specific than the denylist's wins; a less specific one or a tie does not.
    registry = policy("10.1.2.0/24", "10.0.0.0/8")
    await registry.check("http://10.1.2.3/")
    assert (await refused(registry, "http://10.9.9.9/")).kind == "denylist"
    redis_host = policy("10.0.0.0/8", "10.9.9.9/32")
    await redis_host.check("http://10.1.1.1/")
    assert (await refused(redis_host, "http://10.9.9.9/")).kind == "denylist"
    assert (await refused(policy("10.0.0.0/8", "10.0.0.0/8"), "http://10.1.1.1/")).kind == "denylist"
    # Deny everything: the allowlist is the only way in, and a host entry beats every CIDR.
    only = policy("localhost:8080", "0.0.0.0/0,::/0")
    await only.check("http://localhost:8080/x")  # every address localhost has (v4 and v6), loopback included
    assert (await refused(only, "http://93.184.216.34/")).kind == "denylist"
    assert (await refused(only, "http://localhost:8081/")).kind == "denylist"
    # The denylist refuses public and (embedded) loopback addresses too; nothing unlocks metadata.
    assert (await refused(policy(denylist="93.184.216.0/24"), "http://93.184.216.34/")).kind == "denylist"
    assert (await refused(policy(denylist="127.0.0.0/8", embedded=True), "http://127.0.0.1/")).kind == "denylist"
    assert (await refused(policy("169.254.169.254/32"), METADATA)).kind == "metadata"
    with pytest.raises(ValueError, match="DF_SOURCE_DENYLIST"):
        parse_denylist("10.0.0.0/8, registry.corp")


async def test_metadata_is_never_allowed_and_link_local_needs_an_explicit_cidr() -> None:
    wide = policy("0.0.0.0/0,::/0")
    await wide.check("http://0.0.0.0/")
    assert "never allowed" in (await refused(wide, METADATA)).message
    assert "link-local" in (await refused(wide, "http://169.254.10.10/")).message
    explicit = policy("169.254.10.0/24,169.254.169.254/32")
    await explicit.check("http://169.254.10.10/")
    assert "never allowed" in (await refused(explicit, METADATA)).message
    assert "link-local" in (await refused(policy("localhost"), "http://169.254.10.10/")).message


async def test_allowlist_cidrs_and_host_entries() -> None:
    cidr = policy("127.0.0.0/8")
    await cidr.check("http://127.0.0.1:5000/v2/")
    assert "0.0.0.0" in (await refused(cidr, "http://0.0.0.0/")).message  # a literal: the URL names it anyway
    named = policy("localhost:5000")
    await named.check("http://localhost:5000/v2/")  # every address localhost resolves to (v4 and v6)
    assert "DF_SOURCE_ALLOWLIST" in (await refused(named, "http://localhost:5001/v2/")).message
    await policy("localhost").check("http://LOCALHOST/x")
    assert policy("Registry.Corp.").host_allowed("registry.corp.", 443)
    await policy("[::1]:8080").check("http://[::1]:8080/x")
    with pytest.raises(ValueError):
        parse_allowlist("host:port:extra")


async def test_an_unresolvable_host_is_refused_as_unreachable() -> None:
    with pytest.raises(SourceRefused) as caught:
        await policy().check("http://no-such-host.invalid/x")
    assert caught.value.reason == "unreachable"


async def test_a_herd_of_checks_resolves_a_name_once_and_an_address_literal_never() -> None:
    # A thousand first registrations of one URL at once: each one's check used to queue its own
    # getaddrinfo on the loop's few resolver threads. The loop here counts the real lookups it runs.
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def counted(host: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return await real(host, *args, **kwargs)

    loop.getaddrinfo = counted  # type: ignore[method-assign]
    try:
        p = policy("127.0.0.0/8,::1/128,localhost")
        await asyncio.gather(*(p.check(f"http://localhost:8002/f?n={n}") for n in range(200)))
        assert lookups == ["localhost"]
        await asyncio.gather(*(p.check(url) for url in ("http://127.0.0.1:1/", "http://[::1]:1/") * 50))
        assert lookups == ["localhost"]
        assert (await refused(p, "http://169.254.169.254/")).kind == "metadata"  # literals are still judged
        assert (await refused(p, "http://[fe80::1%25eth0]/")).kind == "link_local"
        await asyncio.gather(*(refused(p, "http://no-such-host.invalid/x") for _ in range(20)))
        assert lookups == ["localhost", "no-such-host.invalid"]  # a failed lookup is shared too
    finally:
        del loop.getaddrinfo  # type: ignore[method-assign]


async def test_a_redirect_hop_to_the_metadata_address_is_refused() -> None:
    async with SourceServer() as source, make_source_client(policy=policy("127.0.0.0/8")) as client:
        source.add("hop", b"x", redirect=METADATA)
        probe = await probe_source(client, source.url("hop"), {})
        stats = source.stats("hop")
    assert probe.reason == "forbidden" and "169.254.169.254" in probe.error and "never allowed" in probe.error
    assert stats.requests == 1


# --- what the operator and the client see ------------------------------------------------------------------


async def test_the_message_never_says_what_a_name_resolved_to_and_the_log_line_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=POLICY_LOG)
    refusal = await refused(policy(), "http://user:s3cret@localhost:8002/x?sig=abc")
    assert "localhost" in refusal.message and "127.0.0.1" not in refusal.message and "::1" not in refusal.message
    assert "s3cret" not in refusal.message and "***@localhost:8002" in refusal.message
    [line] = [r.getMessage() for r in caplog.records if r.name == POLICY_LOG]
    assert "localhost resolves to" in line and ("127.0.0.1" in line or "::1" in line)
    assert "DF_SOURCE_ALLOWLIST" in line and "[loopback]" in line
    assert "s3cret" not in line and "sig=abc" not in line


async def test_the_warning_is_rate_limited_per_host_and_counts_what_it_did_not_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=POLICY_LOG)
    now = [0.0]
    p = policy(refusal_log=RefusalLog(window_seconds=60, clock=lambda: now[0]))
    for _ in range(1000):
        await refused(p, METADATA)
    await refused(p, "http://[fe80::1]/")  # another host: its own line
    now[0] = 61.0
    await refused(p, METADATA)
    lines = [r.getMessage() for r in caplog.records if r.name == POLICY_LOG]
    assert len(lines) == 3, lines
    assert "[metadata]" in lines[0] and "no setting allows it" in lines[0] and "more refusals" not in lines[0]
    assert "[link_local]" in lines[1] and "DF_SOURCE_ALLOWLIST" in lines[1]
    assert "999 more refusals of 169.254.169.254:80" in lines[2]


def registration(url: str, cid: str = "127.0.0.1-1-1.0") -> dict[str, object]:
    return {"superNodeIp": "127.0.0.1", "rawUrl": url, "taskUrl": url, "cid": cid, "ip": "127.0.0.1",
            "hostName": "h", "port": 40001, "path": "/peer/file/x", "version": "1.0.6"}


async def refusal_counts(http: httpx.AsyncClient) -> dict[str, float]:
    """``dragonfly_supernode_source_refusals_total`` by reason, as /metrics (API port) shows it."""
    text = (await http.get("/metrics")).text
    return {s.labels["reason"]: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "dragonfly_supernode_source_refusals_total"}


def grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {reason: after[reason] - before.get(reason, 0) for reason in after if after[reason] != before.get(reason, 0)}


def warnings_of(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == POLICY_LOG and needle in r.getMessage()]


async def test_each_refused_registration_answers_607_and_leaves_every_trace(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=POLICY_LOG)
    closed = settings.model_copy(update={"source_allowlist": "", "source_denylist": ""})
    metadata = "http://169.254.169.254:8101/latest/meta-data/"  # a port of its own: its own log key
    async with SourceServer() as source:
        source.add("f.bin", b"data")
        source.add("hop", b"x", redirect=metadata)
        loopback = source.url("f.bin").replace("http://", "http://robot:s3cret@").replace("127.0.0.1", "localhost")
        async with live_supernode(closed) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            before = await refusal_counts(http)
            swarm = await asyncio.gather(*(
                http.post("/peer/registry", json=registration(metadata, f"127.0.0.1-{i}-1.0")) for i in range(100)
            ))
            local = (await http.post("/peer/registry", json=registration(loopback))).json()
            after = await refusal_counts(http)
            metadata_detail = (await http.get(f"/api/v1/tasks/{task_id(metadata)}", headers=AUTH)).json()
            loopback_detail = (await http.get(f"/api/v1/tasks/{task_id(loopback)}", headers=AUTH)).json()
            metadata_lines = warnings_of(caplog, "169.254.169.254:8101")
        async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            allowed = (await http.post("/peer/registry", json=registration(source.url("f.bin")))).json()
            hop = (await http.post("/peer/registry", json=registration(source.url("hop")))).json()
            # A task that exists: a registration whose rawUrl (what a seed retry would fetch) is refused.
            moved = registration(source.url("f.bin"), "127.0.0.1-2-2.0") | {"rawUrl": "http://[::1]:8104/f.bin"}
            moved_answer = (await http.post("/peer/registry", json=moved)).json()
            existing = (await http.get(f"/api/v1/tasks/{task_id(source.url('f.bin'))}", headers=AUTH)).json()
            trail = await audit_trail(http, redis, at_least("source.refused", 102))
    answers = [a.json() for a in swarm]
    assert all(a["code"] == 607 and "never allowed" in a["msg"] for a in answers)
    assert local["code"] == 607 and "DF_SOURCE_ALLOWLIST" in local["msg"] and "cluster mode" in local["msg"]
    assert "127.0.0.1" not in local["msg"] and "s3cret" not in local["msg"]  # what localhost is, and the password
    assert allowed["code"] == 200
    assert hop["code"] == 607 and "169.254.169.254" in hop["msg"]
    # /metrics: one count per refusal; the log: one line per host a minute, naming the setting.
    assert grown(before, after) == {"metadata": 100, "loopback": 1}
    assert len(metadata_lines) == 1 and "no setting allows it" in metadata_lines[0]
    [line] = warnings_of(caplog, "***@localhost")
    assert "[loopback]" in line and "DF_SOURCE_ALLOWLIST" in line and "s3cret" not in line
    # The audit event, with the class.
    refusals = [e for e in trail if e["action"] == "source.refused"]
    assert sum(e["target"] == metadata and e["detail"]["class"] == "metadata" for e in refusals) == 100
    [shown] = [e for e in refusals if "localhost" in e["target"]]
    assert shown["detail"]["class"] == "loopback" and shown["detail"]["reason"] == local["msg"]
    assert "s3cret" not in shown["target"] and "***@localhost" in shown["target"]
    assert [e["detail"]["class"] for e in refusals if e["target"] == moved["rawUrl"]] == ["loopback"]
    # The task detail of a task that was never created: the refusal.
    assert metadata_detail["cdnStatus"] == "REFUSED" and metadata_detail["ID"] == task_id(metadata)
    assert metadata_detail["sourceRefusal"]["reason"] == "metadata"
    assert metadata_detail["sourceRefusal"]["count"] == 100 and metadata_detail["rawURL"] == metadata
    assert metadata_detail["sourceRefusal"]["message"] == answers[0]["msg"]
    assert loopback_detail["sourceRefusal"]["reason"] == "loopback" and "s3cret" not in str(loopback_detail)
    assert loopback_detail["sourceRefusal"]["message"] == local["msg"]
    assert moved_answer["code"] == 607 and existing["cdnStatus"] in ("WAITING", "RUNNING", "SUCCESS")
    assert existing["peers"] == 1 and existing["sourceRefusal"]["reason"] == "loopback"
    assert existing["sourceRefusal"]["url"] == "http://[::1]:8104/f.bin" and existing["sourceRefusal"]["count"] == 1


async def test_the_denylist_refuses_an_allowed_source_end_to_end(
    tmp_path: Path, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Embedded mode allows loopback by default; DF_SOURCE_DENYLIST refuses it (a private range is
    refused the same way: the decision for 10/8 is tested above, 10.x cannot be bound here)."""
    caplog.set_level(logging.WARNING, logger=POLICY_LOG)
    denied = Settings(redis_url="", home=tmp_path / "home", advertise_ip="127.0.0.1", api_tokens="",
                      source_allowlist="", source_denylist="127.0.0.0/8,::1/128")
    async with SourceServer() as source, live_supernode(denied) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("f.bin", b"data")
        before = await refusal_counts(http)
        answer = (await http.post("/peer/registry", json=registration(source.url("f.bin")))).json()
        after = await refusal_counts(http)
        detail = (await http.get(f"/api/v1/tasks/{task_id(source.url('f.bin'))}")).json()
        requests = source.stats("f.bin").requests
    assert answer["code"] == 607 and "DF_SOURCE_DENYLIST" in answer["msg"]
    assert grown(before, after) == {"denylist": 1} and requests == 0
    [line] = warnings_of(caplog, "[denylist]")
    assert "DF_SOURCE_DENYLIST" in line and "DF_SOURCE_ALLOWLIST" in line
    assert detail["cdnStatus"] == "REFUSED" and detail["sourceRefusal"]["reason"] == "denylist"


async def test_an_embedded_supernode_serves_a_loopback_source_with_default_settings(tmp_path: Path) -> None:
    """`make run` next to a file server on the same host, no DF_SOURCE_ALLOWLIST: P2P, not back-to-source;
    the same source behind a cluster-mode replica is refused and the dfget goes to the source."""
    data = os.urandom(3 * 1024 * 1024 + 11)
    embedded = Settings(redis_url="", home=tmp_path / "home", advertise_ip="127.0.0.1", api_tokens="")
    assert embedded.source_allowlist == "" and embedded.source_denylist == ""
    async with SourceServer() as source:
        source.add("blob.bin", data)
        async with live_supernode(embedded) as sn:
            async with Swarm(2, [sn.node], source.url("blob.bin"), tmp_path / "out", versions=("1.0.6",)) as swarm:
                results = await swarm.run()
        full_gets = source.stats("blob.bin").full_gets
    digest = hashlib.sha256(data).hexdigest()
    for result in results:
        assert result.success and result.sha256 == digest, result.error
        assert not result.back_sourced and result.registrations == 1
    assert full_gets == 1  # the seed; both dfgets got their pieces from the supernode and each other


async def test_a_cluster_replica_refuses_a_loopback_source_and_dfget_goes_to_the_source(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    data = os.urandom(256 * 1024)
    closed = settings.model_copy(update={"source_allowlist": ""})
    async with SourceServer() as source:
        source.add("blob.bin", data)
        async with live_supernode(closed) as sn, Swarm(1, [sn.node], source.url("blob.bin"), tmp_path / "out",
                                                      versions=("1.0.6",)) as swarm:
            [result] = await swarm.run()
        stats = source.stats("blob.bin")
    assert result.success and result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.back_sourced and result.registrations == 0 and stats.full_gets == 1  # the dfget's own GET


async def test_preheats_of_refused_sources_are_refused_or_fail_clearly(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=POLICY_LOG)
    closed = settings.model_copy(update={"source_allowlist": ""})
    manifest = "http://169.254.169.254:8102/v2/library/x/manifests/latest"
    hop_target = "http://169.254.169.254:8103/blob"
    async with SourceServer() as source:
        source.add("hop", b"x", redirect=hop_target)
        local = source.url("hop").replace("127.0.0.1", "localhost")
        async with live_supernode(closed) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            before = await refusal_counts(http)
            legacy = await http.post("/preheats", json={"type": "image", "url": manifest}, headers=AUTH)
            oapi = await http.post("/oapi/v1/jobs", headers=AUTH,
                                   json={"type": "preheat", "args": {"type": "image", "url": manifest}})
            loopback = await http.post("/api/v1/preheats", json={"type": "file", "url": local}, headers=AUTH)
            refused_now = grown(before, await refusal_counts(http))
        async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            before = await refusal_counts(http)
            created = await http.post("/preheats", json={"type": "file", "url": source.url("hop")}, headers=AUTH)
            later = await poll_legacy(http, created.json()["ID"])
            refused_later = grown(before, await refusal_counts(http))
            trail = await audit_trail(http, redis, at_least("preheat.refused", 3))
    assert legacy.status_code == 400 and "never allowed" in legacy.json()["message"]
    assert legacy.json()["code"] == 400
    assert oapi.status_code == 400 and "169.254.169.254" in oapi.json()["errors"]
    assert loopback.status_code == 400 and "DF_SOURCE_ALLOWLIST" in loopback.json()["message"]
    assert "127.0.0.1" not in loopback.json()["message"]  # what localhost resolved to stays in the log
    # Allowed at creation, refused at the redirect hop: the job fails with the reason.
    assert later["status"] == "FAIL" and "169.254.169.254" in later["errorMsg"]
    assert refused_now == {"metadata": 2, "loopback": 1} and refused_later == {"metadata": 1}
    assert len(warnings_of(caplog, "169.254.169.254:8102")) == 1  # legacy and Open API: one line a minute
    assert len(warnings_of(caplog, "169.254.169.254:8103")) == 1
    assert len(warnings_of(caplog, "[loopback]")) == 1
    refusals = [e for e in trail if e["action"] == "preheat.refused"]
    assert len(refusals) == 3 and all(e["actor"] == "tests" and e["outcome"] == "refused" for e in refusals)
