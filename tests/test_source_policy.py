"""The source URL policy (SSRF guard): real resolution of literal IPs and ``localhost``, redirect hops,
and its use by dfget registrations and preheats. Nothing here ever connects to a refused address:
the policy refuses before any connection is made."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from app.cdn.policy import SourcePolicy, SourceRefused, parse_allowlist
from app.cdn.source import make_source_client, probe_source
from app.core.config import Settings
from tests.live import live_supernode
from tests.preheat_support import AUTH, at_least, audit_trail, poll_legacy
from tests.sources import SourceServer

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


def policy(allowlist: str = "") -> SourcePolicy:
    return SourcePolicy(parse_allowlist(allowlist))


async def refused(p: SourcePolicy, url: str) -> str:
    with pytest.raises(SourceRefused) as caught:
        await p.check(url)
    return caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        METADATA,
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",  # IPv4-mapped: the same address on the wire
        "http://169.254.10.10/",
        "http://[fe80::1]/",
        "http://127.0.0.1:8080/x",
        "http://2130706433/",  # 127.0.0.1 in decimal, as inet_aton reads it
        "http://localhost:8002/x",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://100.64.0.1/",  # carrier-grade NAT: not public
        "http://0.0.0.0/",
    ],
)
async def test_without_allowlist_internal_addresses_are_refused(url: str) -> None:
    assert "refused" in await refused(policy(), url)


async def test_public_addresses_and_schemes() -> None:
    await policy().check("https://93.184.216.34/v2/")  # a literal: resolution sends nothing
    assert "scheme" in await refused(policy(), "file:///etc/passwd")
    assert "scheme" in await refused(policy(), "ftp://93.184.216.34/x")


async def test_metadata_is_never_allowed_and_link_local_needs_an_explicit_cidr() -> None:
    wide = policy("0.0.0.0/0,::/0")
    await wide.check("http://10.1.2.3/")
    assert "never allowed" in await refused(wide, METADATA)
    assert "link-local" in await refused(wide, "http://169.254.10.10/")
    explicit = policy("169.254.10.0/24,169.254.169.254/32")
    await explicit.check("http://169.254.10.10/")
    assert "never allowed" in await refused(explicit, METADATA)
    assert "link-local" in await refused(policy("localhost"), "http://169.254.10.10/")


async def test_allowlist_cidrs_and_host_entries() -> None:
    cidr = policy("127.0.0.0/8")
    await cidr.check("http://127.0.0.1:5000/v2/")
    assert "10.1.2.3" in await refused(cidr, "http://10.1.2.3/")
    named = policy("localhost:5000")
    await named.check("http://localhost:5000/v2/")  # every address localhost resolves to (v4 and v6)
    assert "DF_SOURCE_ALLOWLIST" in await refused(named, "http://localhost:5001/v2/")
    await policy("localhost").check("http://LOCALHOST/x")
    assert policy("Registry.Corp.").host_allowed("registry.corp.", 443)
    await policy("[::1]:8080").check("http://[::1]:8080/x")
    with pytest.raises(ValueError):
        parse_allowlist("host:port:extra")


async def test_an_unresolvable_host_is_refused_as_unreachable() -> None:
    with pytest.raises(SourceRefused) as caught:
        await policy().check("http://no-such-host.invalid/x")
    assert caught.value.reason == "unreachable"


async def test_a_redirect_hop_to_the_metadata_address_is_refused() -> None:
    async with SourceServer() as source, make_source_client(policy=policy("127.0.0.0/8")) as client:
        source.add("hop", b"x", redirect=METADATA)
        probe = await probe_source(client, source.url("hop"), {})
        stats = source.stats("hop")
    assert probe.reason == "forbidden" and "169.254.169.254" in probe.error and "never allowed" in probe.error
    assert stats.requests == 1


def registration(url: str) -> dict[str, object]:
    return {"superNodeIp": "127.0.0.1", "rawUrl": url, "taskUrl": url, "cid": "127.0.0.1-1-1.0", "ip": "127.0.0.1",
            "hostName": "h", "port": 40001, "path": "/peer/file/x", "version": "1.0.6"}


async def test_dfget_registrations_of_refused_sources_get_607(settings: Settings, redis: Redis) -> None:
    closed = settings.model_copy(update={"source_allowlist": ""})
    async with SourceServer() as source:
        source.add("f.bin", b"data")
        source.add("hop", b"x", redirect=METADATA)
        async with live_supernode(closed) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            metadata = (await http.post("/peer/registry", json=registration(METADATA))).json()
            loopback = (await http.post("/peer/registry", json=registration(source.url("f.bin")))).json()
        async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            allowed = (await http.post("/peer/registry", json=registration(source.url("f.bin")))).json()
            hop = (await http.post("/peer/registry", json=registration(source.url("hop")))).json()
            trail = await audit_trail(http, redis, at_least("source.refused", 2))
    assert metadata["code"] == 607 and "never allowed" in metadata["msg"]
    assert loopback["code"] == 607 and "DF_SOURCE_ALLOWLIST" in loopback["msg"]
    assert allowed["code"] == 200
    assert hop["code"] == 607 and "169.254.169.254" in hop["msg"]
    audited = [(e["actor"], e["target"]) for e in trail if e["action"] == "source.refused"]
    assert ("dfget", METADATA) in audited and ("dfget", source.url("f.bin")) in audited


async def test_preheats_of_refused_sources_are_refused_or_fail_clearly(settings: Settings, redis: Redis) -> None:
    closed = settings.model_copy(update={"source_allowlist": ""})
    manifest = "http://169.254.169.254/v2/library/x/manifests/latest"
    async with SourceServer() as source:
        source.add("hop", b"x", redirect=METADATA)
        async with live_supernode(closed) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            legacy = await http.post("/preheats", json={"type": "image", "url": manifest}, headers=AUTH)
            oapi = await http.post("/oapi/v1/jobs", headers=AUTH,
                                   json={"type": "preheat", "args": {"type": "image", "url": manifest}})
            loopback = await http.post("/api/v1/preheats", json={"type": "file", "url": source.url("hop")},
                                       headers=AUTH)
        async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
            created = await http.post("/preheats", json={"type": "file", "url": source.url("hop")}, headers=AUTH)
            later = await poll_legacy(http, created.json()["ID"])
            trail = await audit_trail(http, redis, at_least("preheat.refused", 3))
    assert legacy.status_code == 400 and "never allowed" in legacy.json()["message"]
    assert legacy.json()["code"] == 400
    assert oapi.status_code == 400 and "169.254.169.254" in oapi.json()["errors"]
    assert loopback.status_code == 400 and "DF_SOURCE_ALLOWLIST" in loopback.json()["message"]
    # Allowed at creation, refused at the redirect hop: the job fails with the reason.
    assert later["status"] == "FAIL" and "169.254.169.254" in later["errorMsg"]
    refusals = [e for e in trail if e["action"] == "preheat.refused"]
    assert len(refusals) == 3 and all(e["actor"] == "tests" and e["outcome"] == "refused" for e in refusals)
