"""DF_PEER_IP_CHECK (issue 7 finding 5): a registration's ip must be the address it came from; behind
haproxy (the shipped deploy/haproxy/haproxy.cfg, `option forwardfor`) the address comes from
X-Forwarded-For, believed only from DF_TRUSTED_PROXIES. Clients use distinct 127.0.0.x source
addresses, so each is a different host to the replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bridge.peer_ip import PeerAddress, client_address, ip_mismatch, parse_trusted
from app.core.config import Settings
from tests.cluster import Cluster
from tests.haproxy import VipCluster, replica_host
from tests.sources import SourceServer
from tests.test_bridge import registration

LB = parse_trusted("10.0.0.100/32, 10.0.1.0/24")


@pytest.mark.parametrize(("direct", "forwarded", "expected"), [
    ("192.0.2.7", (), "192.0.2.7"),
    ("192.0.2.7", ("10.9.9.9",), "192.0.2.7"),  # not from a trusted proxy: the header is ignored
    ("10.0.0.100", ("192.0.2.7",), "192.0.2.7"),
    ("10.0.0.100", ("6.6.6.6, 192.0.2.7",), "192.0.2.7"),  # the client's own value stays on the left
    ("10.0.0.100", ("6.6.6.6", "192.0.2.7"), "192.0.2.7"),  # two header lines count as one list
    ("10.0.0.100", ("192.0.2.7, 10.0.1.5",), "192.0.2.7"),  # a chain of trusted proxies is walked
    ("10.0.0.100", (), "10.0.0.100"),
    ("::ffff:192.0.2.7", (), "192.0.2.7"),  # a dual-stack listener's view of an IPv4 client
    ("10.0.0.100", ("unknown",), None),
])
def test_client_address(direct: str, forwarded: tuple[str, ...], expected: str | None) -> None:
    found = client_address(PeerAddress(direct, forwarded), LB)
    assert (str(found) if found is not None else None) == expected


def test_mismatch_message_and_bad_settings() -> None:
    assert ip_mismatch("192.0.2.7", PeerAddress("192.0.2.7"), "") is None
    assert ip_mismatch("192.0.2.7", None, "") is None  # no transport: nothing to compare with
    message = ip_mismatch("192.0.2.8", PeerAddress("192.0.2.7"), "")
    assert message is not None and "192.0.2.8" in message and "192.0.2.7" in message
    assert "DF_PEER_IP_CHECK" in message
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(redis_url="redis://x", advertise_ip="127.0.0.1", trusted_proxies="10.0.0.0/8,not-a-cidr")


async def _register(url: str, source_ip: str, ip: str, target: str, **headers: str) -> dict[str, Any]:
    transport = httpx.AsyncHTTPTransport(local_address=source_ip)
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        body = registration(url, f"{ip}-1-{source_ip}") | {"ip": ip}
        answer = await http.post(f"http://{target}/peer/registry", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        reply: dict[str, Any] = answer.json()
        return reply


@pytest.mark.slow
async def test_spoofed_registrations_are_refused_through_haproxy_and_direct(
    tmp_path: Path, redis_url: str, broker_url: str
) -> None:
    # haproxy reaches the replicas from 127.0.0.1 (the kernel's source for 127/8): the trusted proxy.
    # uvicorn would itself resolve X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS' default); point
    # it elsewhere so that the header reaches the check and DF_TRUSTED_PROXIES is what is tested.
    env = {"DF_PEER_IP_CHECK": "true", "DF_TRUSTED_PROXIES": "127.0.0.1/32", "FORWARDED_ALLOW_IPS": "192.0.2.1"}
    cluster = Cluster(tmp_path / "cluster", redis_url, broker_url, extra_env=env)
    cluster.workdir.mkdir()
    vip = VipCluster(cluster).start()
    try:
        async with SourceServer() as source:
            source.add("p.bin", b"x" * 1000)
            url = source.url("p.bin")
            honest = await _register(url, "127.0.0.5", "127.0.0.5", vip.api_vip)
            spoofed = await _register(url, "127.0.0.5", "127.0.0.6", vip.api_vip)
            # The client writes its own X-Forwarded-For: haproxy appends the real address after it.
            forged = await _register(url, "127.0.0.5", "127.0.0.6", vip.api_vip, **{"X-Forwarded-For": "127.0.0.6"})
            replica = f"{replica_host(0)}:{vip.lb.api_port}"
            direct = await _register(url, "127.0.0.7", "127.0.0.7", replica)
            direct_forged = await _register(url, "127.0.0.7", "127.0.0.8", replica,
                                            **{"X-Forwarded-For": "127.0.0.8"})  # 127.0.0.7 is no proxy
    finally:
        vip.stop()
    assert honest["code"] == 200 and direct["code"] == 200, (honest, direct, vip.logs())
    for refused in (spoofed, forged, direct_forged):
        assert refused["code"] == 501, refused
        assert "is not the address this request came from" in refused["msg"], refused
    assert "(127.0.0.5)" in spoofed["msg"] and "(127.0.0.5)" in forged["msg"]
    assert "(127.0.0.7)" in direct_forged["msg"]
