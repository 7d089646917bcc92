"""``redis+cluster://`` URLs: the state store on a Redis Cluster.

``redis+cluster://[user:password@]host1:6379,host2:6379[?option=value&...]``: any node (or several, so
that start-up survives one being down) from which redis-py's cluster client discovers the others. The
credentials are the nodes' (ACL user and password, or the password alone as ``:password@``). The query
takes the options a ``redis://`` URL takes (``socket_timeout``, ``max_connections``, ...), converted
as redis-py converts them; a database other than 0 does not exist on a Redis Cluster and is refused.
The Celery broker cannot be a cluster (Kombu has no cluster transport): DF_BROKER_URL stays a plain or
Sentinel Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from redis.asyncio.connection import parse_url

from app.core.url_hosts import host_list

SCHEME = "redis+cluster://"
DEFAULT_PORT = 6379
# parse_url's keys that the cluster client takes in other arguments (or not at all).
_NOT_OPTIONS = {"host", "port", "username", "password", "db", "path", "connection_class"}


@dataclass(frozen=True)
class ClusterUrl:
    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None = field(repr=False)  # never in a log line
    options: dict[str, Any] = field(default_factory=dict)


def is_cluster(url: str) -> bool:
    return url.startswith(SCHEME)


def parse(url: str) -> ClusterUrl:
    """Raise ValueError for a URL that names no node, a bad port, or a database other than 0."""
    parsed = urlparse(url)
    hosts = host_list(parsed, DEFAULT_PORT, "a node address")
    # The query's options, typed by redis-py's own parser (it wants one host: give it the first).
    options = parse_url(f"redis://{hosts[0][0]}:{hosts[0][1]}{parsed.path or '/'}?{parsed.query}")
    if options.get("db"):
        raise ValueError(f"a {SCHEME} URL names database {options['db']}: a Redis Cluster has only database 0")
    # Percent-decoded, as redis-py's from_url does for redis:// (a password may hold '@' or ':').
    username = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password is not None else None
    return ClusterUrl(hosts, username, password, {k: v for k, v in options.items() if k not in _NOT_OPTIONS})
