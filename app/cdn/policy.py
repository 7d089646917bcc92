"""Which source URLs the supernode may fetch (SSRF guard for dfget sources, seeding and preheats).

Anyone who can reach the dfget or preheat API can make the supernode GET a URL, so a URL must not
lead to the services around it. Every address a host resolves to is checked (one bad record refuses
the URL), and the source client checks every request it sends, redirect hops included. An IPv6
address that embeds an IPv4 address is judged as that IPv4 address (app.cdn.addresses).

Rules, in order (``A`` = the most specific ``DF_SOURCE_ALLOWLIST`` entry matching the address, a
``host[:port]`` entry naming the URL's host being more specific than any CIDR; ``D`` = the most
specific ``DF_SOURCE_DENYLIST`` CIDR containing it):

1. **Cloud metadata addresses are never reachable** (``169.254.169.254``, ``169.254.170.2``,
   ``fd00:ec2::254``), whatever the lists say: no legitimate source lives there, and an allowlist typo
   must not expose instance credentials.
2. **The denylist wins unless the allowlist is more specific**: refused when ``D`` exists and ``A`` is
   absent or no longer than ``D`` (a tie refuses). ``DENYLIST=10.0.0.0/8`` with
   ``ALLOWLIST=10.1.2.3/32`` (or ``registry.corp``) lets exactly that registry through;
   ``DENYLIST=0.0.0.0/0,::/0`` makes the allowlist the only way in.
3. **Link-local addresses** (``169.254.0.0/16``, ``fe80::/10``) need an ``A`` that is a CIDR inside a
   link-local range: ``0.0.0.0/0`` or a host entry does not unlock them.
4. **Loopback** (127/8, ::1) needs an ``A`` in cluster mode, where it reaches the replica's own Redis
   and Postgres; embedded mode (one host, sources often on it) allows it.
5. **Special-purpose addresses** (0.0.0.0/8, ::, multicast, 240/4, documentation, benchmarking,
   Teredo, ...) need an ``A``.
6. **Private** (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) **and public addresses are allowed.**

Every refusal is counted (``dragonfly_supernode_source_refusals_total{reason}``) and logged as a
WARNING naming the setting to change, at most once a minute per (reason, host, port) and process, the
next line saying how many were not logged. What a name resolved to appears only in that log line (the
operator's); the message returned to callers, and so to clients, names the class of address, never
the address a name resolved to. An unresolvable host is not a policy refusal (``reason="unreachable"``).

Residual risk: the address is checked at resolution time, and the HTTP client resolves again when it
connects, so a DNS server answering differently within milliseconds (rebinding) is not caught here;
deployments that need that should also egress-filter at the network level.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

import httpx
from prometheus_client import Counter

from app.cdn.addresses import LINK_LOCAL, AddressClass, IPAddress, IPNetwork, classify, describe, judged
from app.core.config import Settings
from app.core.masking import mask_url

log = logging.getLogger("app.cdn.policy")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CACHE_SECONDS = 10.0  # a burst of registrations for one URL resolves its host once
_CACHE_ENTRIES = 1024
_HOST_ENTRY = 129  # a host entry outranks every CIDR (an IPv6 /128 included) when lists compete

# The ``reason`` label values: the address classes that can be refused, the denylist, and URLs that are
# not http(s) with a host.
REFUSAL_REASONS = ("metadata", "link_local", "loopback", "special", "denylist", "url")
source_refusals = Counter(
    "source_refusals_total", "Source URLs (and redirect hops) the source policy refused, by reason.", ["reason"],
    namespace="dragonfly", subsystem="supernode",
)
for _reason in REFUSAL_REASONS:
    source_refusals.labels(_reason)  # every series from the start: a rate() needs the zero


class SourceRefused(Exception):
    """The URL may not be fetched.

    ``reason``: "forbidden" (policy) or "unreachable" (no address). ``kind``: the refusal's class for a
    forbidden URL (one of :data:`REFUSAL_REASONS`). ``message`` never holds a resolved address.
    """

    def __init__(self, message: str, reason: str = "forbidden", kind: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class HostEntry:
    host: str
    port: int | None  # None: any port


@dataclass(frozen=True)
class Allowlist:
    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[HostEntry, ...] = ()


@dataclass(frozen=True)
class Refusal:
    kind: str  # a REFUSAL_REASONS value
    text: str  # for callers and clients: what the address is and what allows it (no address)
    remedy: str  # for the operator's log: what to change, with the address


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


def parse_denylist(text: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, fd00::/8"`` → networks. CIDRs only: a name would be trusted to DNS, the denied."""
    networks: list[IPNetwork] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"DF_SOURCE_DENYLIST entry {item!r} is not a CIDR") from exc
    return tuple(networks)


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


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def masked_url(url: str | httpx.URL, keep_query: bool = True) -> str:
    """Kept for the callers of the source policy; the masking itself lives in app.core.masking."""
    return mask_url(url, keep_query)


class RefusalLog:
    """Rate limit of the refusal WARNING: one line per key and window, the next one counting the rest,
    so a swarm of a thousand registrations of one refused URL logs one line, not a thousand."""

    def __init__(self, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 4096) -> None:
        self.window = window_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[str, str, int], list[float | int]] = {}  # key -> [window start, suppressed]

    def admit(self, key: tuple[str, str, int]) -> int | None:
        """None: do not log (counted as suppressed). Else log, with this many suppressed since the last."""
        now = self.clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            return None
        suppressed = int(entry[1]) if entry is not None else 0
        if entry is None and len(self._seen) >= self.max_keys:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
            if len(self._seen) >= self.max_keys:  # a flood of distinct hosts: forget, log again
                self._seen.clear()
        self._seen[key] = [now, 0]
        return suppressed


def _best(networks: tuple[IPNetwork, ...], address: IPAddress) -> int | None:
    """Prefix length of the most specific network containing ``address``, None when none does."""
    return max((net.prefixlen for net in networks if address in net), default=None)


def _inside_link_local(net: IPNetwork) -> bool:
    return any(net.version == ll.version and net.subnet_of(ll) for ll in LINK_LOCAL)  # type: ignore[arg-type]


def _explain(url: str | httpx.URL, host: str, address: IPAddress, refusal: Refusal) -> tuple[str, str]:
    """(the message for callers and clients, the operator's log detail). Only the log says what a name
    resolved to; when the host is a literal the caller wrote the address, so naming it (and the IPv4
    address it embeds) tells nothing new."""
    inner, form = judged(address)
    embedding = f" ({form} form of {inner})" if form else ""
    shown = masked_url(url)
    if _literal(host):
        return (f"source {shown} refused: {host}{embedding} is {refusal.text}",
                f"address {address}{embedding}; {refusal.remedy}")
    return (f"source {shown} refused: host {host} resolves to {refusal.text}",
            f"{host} resolves to {address}{embedding}; {refusal.remedy}")


class SourcePolicy:
    def __init__(self, allowlist: Allowlist, denylist: tuple[IPNetwork, ...] = (), *,
                 allow_loopback: bool = False, refusal_log: RefusalLog | None = None) -> None:
        self.allowlist = allowlist
        self.denylist = denylist
        self.allow_loopback = allow_loopback
        self.refusal_log = refusal_log or RefusalLog()
        self._link_local_allowed = tuple(net for net in allowlist.networks if _inside_link_local(net))
        self._cache: dict[tuple[str, int], tuple[float, tuple[IPAddress, ...]]] = {}
        self._lookups: dict[tuple[str, int], asyncio.Task[tuple[IPAddress, ...]]] = {}

    # --- verdicts --------------------------------------------------------------------------------

    def refusal(self, address: IPAddress, host_allowed: bool) -> Refusal | None:
        """Why ``address`` may not be contacted, or None when it may (rules in the module docstring)."""
        inner, _ = judged(address)
        cls = classify(inner)
        if cls is AddressClass.METADATA:
            return Refusal("metadata", "a cloud metadata address, which is never allowed",
                           "no setting allows it: cloud metadata addresses are never fetched")
        if cls is AddressClass.LINK_LOCAL:
            allow = _best(self._link_local_allowed, inner)
        else:
            allow = _HOST_ENTRY if host_allowed else _best(self.allowlist.networks, inner)
        deny = _best(self.denylist, inner)
        if deny is not None and (allow is None or allow <= deny):
            return Refusal("denylist", "an address DF_SOURCE_DENYLIST refuses",
                           f"to allow it, remove the entry containing {inner} from DF_SOURCE_DENYLIST or add {inner} "
                           "(or the host) to DF_SOURCE_ALLOWLIST: an allowlist entry more specific than the "
                           "denylist's wins")
        if allow is not None:
            return None
        if cls is AddressClass.LINK_LOCAL:
            return Refusal("link_local", "a link-local address; only an explicit link-local CIDR in "
                           "DF_SOURCE_ALLOWLIST allows it",
                           f"to allow it, add {inner} (or a CIDR inside 169.254.0.0/16 or fe80::/10) to "
                           "DF_SOURCE_ALLOWLIST")
        if cls is AddressClass.LOOPBACK and not self.allow_loopback:
            return Refusal("loopback", "a loopback address, refused in cluster mode; add it (or the host) to "
                           "DF_SOURCE_ALLOWLIST to allow it",
                           f"to allow it, add {inner} (or the host) to DF_SOURCE_ALLOWLIST")
        if cls is AddressClass.SPECIAL:
            return Refusal("special", f"{describe(cls)}; add it (or the host) to DF_SOURCE_ALLOWLIST to allow it",
                           f"to allow it, add {inner} (or the host) to DF_SOURCE_ALLOWLIST")
        return None

    def host_allowed(self, host: str, port: int) -> bool:
        name = _normal_host(host)
        return any(e.host == name and e.port in (None, port) for e in self.allowlist.hosts)

    # --- checks ----------------------------------------------------------------------------------

    async def check(self, url: str | httpx.URL) -> None:
        """Raise :class:`SourceRefused` unless every address of the URL's host may be contacted."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            self._refuse(url, "", 0, "url", f"invalid URL {masked_url(url)!r}: {exc}",
                         "only http and https URLs are fetched")
        if parsed.scheme not in _DEFAULT_PORTS:
            self._refuse(url, parsed.host, 0, "url",
                         f"URL scheme {parsed.scheme!r} of {masked_url(url)} is not allowed (http and https only)",
                         "only http and https URLs are fetched")
        host = parsed.host
        if not host:
            self._refuse(url, "", 0, "url", f"URL {masked_url(url)} has no host", "only URLs with a host are fetched")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        allowed_by_name = self.host_allowed(host, port)
        for address in await self.resolve(host, port):
            refusal = self.refusal(address, allowed_by_name)
            if refusal is not None:
                message, detail = _explain(url, host, address, refusal)
                self._refuse(url, host, port, refusal.kind, message, detail)

    async def check_request(self, request: httpx.Request) -> None:
        """httpx request hook: runs before every request the client sends, each redirect hop included."""
        await self.check(request.url)

    def _refuse(self, url: str | httpx.URL, host: str, port: int, kind: str, message: str, remedy: str) -> NoReturn:
        """Count, log (rate-limited) and raise the refusal."""
        source_refusals.labels(kind).inc()
        suppressed = self.refusal_log.admit((kind, host, port))
        if suppressed is not None:
            more = f" ({suppressed} more refusals of {host}:{port} in the last minute not logged)" if suppressed else ""
            log.warning("source policy refused %s [%s]: %s%s", masked_url(url, keep_query=False), kind, remedy, more)
        raise SourceRefused(message, kind=kind)

    async def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        """The host's addresses: an address literal as it is, a name from the cache or one lookup.

        Concurrent misses of one name share one lookup: getaddrinfo runs on the loop's small thread
        pool, and a herd of a thousand first registrations queued a thousand lookups behind it.
        Only canonical literals skip getaddrinfo ("127.1" and "0x7f.1" still go through it).
        """
        with contextlib.suppress(ValueError):
            return (ipaddress.ip_address(host.split("%")[0]),)
        key = (host.lower(), port)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loop = asyncio.get_running_loop()
        pending = self._lookups.get(key)
        if pending is None or pending.get_loop() is not loop:  # a Celery job runs each seed on a new loop
            pending = loop.create_task(self._lookup(host, port, key))
            self._lookups[key] = pending
            pending.add_done_callback(self._forget_lookup)
        return await asyncio.shield(pending)

    def _forget_lookup(self, done: asyncio.Task[tuple[IPAddress, ...]]) -> None:
        for key, task in list(self._lookups.items()):
            if task is done:
                del self._lookups[key]

    async def _lookup(self, host: str, port: int, key: tuple[str, int]) -> tuple[IPAddress, ...]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise SourceRefused(f"cannot resolve host {host}: {exc}", reason="unreachable") from exc
        addresses = tuple(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise SourceRefused(f"host {host} has no address", reason="unreachable")
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + _CACHE_SECONDS, addresses)
        return addresses


def source_policy(settings: Settings) -> SourcePolicy:
    """The process-wide policy for these settings: shared, so its DNS cache and log rate limit are too.
    Loopback follows the mode (allowed embedded, refused in cluster mode, the Celery worker included)."""
    return _shared_policy(settings.source_allowlist, settings.source_denylist, settings.embedded)


@lru_cache(maxsize=8)
def _shared_policy(allowlist: str, denylist: str, embedded: bool) -> SourcePolicy:
    return SourcePolicy(parse_allowlist(allowlist), parse_denylist(denylist), allow_loopback=embedded)
