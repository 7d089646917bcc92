"""Which source URLs the supernode may fetch (SSRF guard for dfget sources, seeding and preheats).

Anyone who can reach the dfget or preheat API can make the supernode GET a URL, so a URL must not
lead to internal services. Every address a host resolves to is checked (one bad record refuses the
URL), and the source client checks every request it sends, redirect hops included.

Rules, in order:

1. **Cloud metadata addresses are never reachable** (``169.254.169.254``, ``169.254.170.2``,
   ``fd00:ec2::254``), whatever ``DF_SOURCE_ALLOWLIST`` says: no legitimate source lives there and an
   allowlist typo must not expose instance credentials.
2. **Other link-local addresses** (``169.254.0.0/16``, ``fe80::/10``) are refused unless an allowlist
   CIDR lies entirely inside a link-local range: ``0.0.0.0/0`` or a host name entry does not unlock them.
3. **Loopback, private and other non-global addresses** (127/8, 10/8, 172.16/12, 192.168/16, 100.64/10,
   fc00::/7, ::1, ...) are refused unless allowed by a CIDR that contains the address or by a
   ``host[:port]`` entry naming the URL's host (and port).
4. Public addresses are always allowed.

Residual risk: the address is checked at resolution time, and the HTTP client resolves again when it
connects, so a DNS server answering differently within milliseconds (rebinding) is not caught here;
deployments that need that should also egress-filter at the network level.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from functools import lru_cache

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
)
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CACHE_SECONDS = 10.0  # a burst of registrations for one URL resolves its host once
_CACHE_ENTRIES = 1024


class SourceRefused(Exception):
    """The URL may not be fetched. ``reason``: "forbidden" (policy) or "unreachable" (no address)."""

    def __init__(self, message: str, reason: str = "forbidden") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class HostEntry:
    host: str
    port: int | None  # None: any port


@dataclass(frozen=True)
class Allowlist:
    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[HostEntry, ...] = ()


def parse_allowlist(text: str) -> Allowlist:
    """``"10.0.0.0/8, registry.corp:5000, [::1]:8080, harbor.corp"`` → networks and host entries."""
    networks: list[IPNetwork] = []
    hosts: list[HostEntry] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        hosts.append(_host_entry(item))
    return Allowlist(tuple(networks), tuple(hosts))


def _host_entry(item: str) -> HostEntry:
    if item.startswith("["):  # [v6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    elif item.count(":") > 1:
        raise ValueError(f"DF_SOURCE_ALLOWLIST entry {item!r}: write an IPv6 host as [addr]:port")
    else:
        host, _, port = item.partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError(f"DF_SOURCE_ALLOWLIST entry {item!r} is neither a CIDR nor host[:port]")
    return HostEntry(_normal_host(host), int(port) if port else None)


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


def _plain(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d is the IPv4 address a.b.c.d on the wire; judge it as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "a loopback address"
    if address.is_private:
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    return "a non-public address"


class SourcePolicy:
    def __init__(self, allowlist: Allowlist) -> None:
        self.allowlist = allowlist
        self._cache: dict[tuple[str, int], tuple[float, tuple[IPAddress, ...]]] = {}

    # --- verdicts --------------------------------------------------------------------------------

    def address_problem(self, address: IPAddress, host_allowed: bool) -> str | None:
        """Why ``address`` may not be contacted, or None when it may."""
        address = _plain(address)
        if address in METADATA_ADDRESSES:
            return f"{address} is a cloud metadata address, which is never allowed"
        if any(address in net for net in LINK_LOCAL):
            if any(address in net and _inside_link_local(net) for net in self.allowlist.networks):
                return None
            return (
                f"{address} is a link-local address; only an explicit link-local CIDR in "
                "DF_SOURCE_ALLOWLIST allows it"
            )
        if address.is_global:
            return None
        if host_allowed or any(address in net for net in self.allowlist.networks):
            return None
        return f"{address} is {_kind(address)}; add it (or the host) to DF_SOURCE_ALLOWLIST to allow it"

    def host_allowed(self, host: str, port: int) -> bool:
        name = _normal_host(host)
        return any(e.host == name and e.port in (None, port) for e in self.allowlist.hosts)

    # --- checks ----------------------------------------------------------------------------------

    async def check(self, url: str | httpx.URL) -> None:
        """Raise :class:`SourceRefused` unless every address of the URL's host may be contacted."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise SourceRefused(f"invalid URL {url!r}: {exc}") from exc
        if parsed.scheme not in _DEFAULT_PORTS:
            raise SourceRefused(f"URL scheme {parsed.scheme!r} of {url} is not allowed (http and https only)")
        host = parsed.host
        if not host:
            raise SourceRefused(f"URL {url} has no host")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        allowed_by_name = self.host_allowed(host, port)
        for address in await self.resolve(host, port):
            problem = self.address_problem(address, allowed_by_name)
            if problem is not None:
                raise SourceRefused(f"source {url} refused: host {host} resolves to {problem}")

    async def check_request(self, request: httpx.Request) -> None:
        """httpx request hook: runs before every request the client sends, each redirect hop included."""
        await self.check(request.url)

    async def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        key = (host.lower(), port)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise SourceRefused(f"cannot resolve host {host}: {exc}", reason="unreachable") from exc
        addresses = tuple(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise SourceRefused(f"host {host} has no address", reason="unreachable")
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = (now + _CACHE_SECONDS, addresses)
        return addresses


def _inside_link_local(net: IPNetwork) -> bool:
    return any(net.version == ll.version and net.subnet_of(ll) for ll in LINK_LOCAL)  # type: ignore[arg-type]


@lru_cache(maxsize=8)
def source_policy(allowlist: str) -> SourcePolicy:
    """The process-wide policy for a ``DF_SOURCE_ALLOWLIST`` value (shared, so its DNS cache is too)."""
    return SourcePolicy(parse_allowlist(allowlist))
