"""``redis+sentinel://`` URLs, the one form both the state store and the Celery broker take.

``redis+sentinel://[:password@]host1:26379,host2:26379/<db>?master=<name>``: the password is the Redis
master's (the sentinels are asked without one), the db the master's, ``master`` the name the sentinels
monitor (DF_REDIS_SENTINEL_MASTER when absent). Kombu spells the same thing differently: one
``sentinel://`` URL per sentinel joined by ``;`` (its failover list) and the master name as a transport
option. :func:`kombu_broker` translates, so an operator writes Sentinel addresses once, in one form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

from app.core.url_hosts import host_list

SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    hosts: list[tuple[str, int]]
    db: int
    master: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return url.startswith(SCHEME)


def parse(url: str) -> SentinelUrl:
    """Raise ValueError for a URL that names no sentinel, a bad port or a bad db."""
    parsed = urlparse(url)
    hosts = host_list(parsed, DEFAULT_SENTINEL_PORT, "a sentinel address")
    master = parse_qs(parsed.query).get("master", [""])[0] or None
    # Percent-decoded, as redis-py's from_url does for redis:// (a password may hold '@' or ':').
    password = unquote(parsed.password) if parsed.password is not None else None
    return SentinelUrl(hosts, int(parsed.path.strip("/") or 0), master, password)


def with_master(url: str, master: str) -> str:
    """``url`` naming ``master`` unless it names one already, so that every process reading the URL
    alone (a Celery worker, a replica's producer) finds the same master."""
    if not is_sentinel(url) or parse(url).master:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'master': master})}"


def kombu_broker(url: str) -> tuple[str, dict[str, Any]]:
    """(Kombu broker URL, broker_transport_options) for a ``redis+sentinel://`` URL that names its master."""
    address = parse(url)
    if address.master is None:
        raise ValueError(f"{SCHEME} broker URL without ?master= (see with_master)")
    auth = f":{quote(address.password, safe='')}@" if address.password else ""
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{address.db}" for host, port in address.hosts)
    return broker, {"master_name": address.master}
