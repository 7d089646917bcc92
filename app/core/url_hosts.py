"""The ``host1:port1,host2:port2`` part of the multi-host Redis URLs (``redis+sentinel://``,
``redis+cluster://``), which urllib cannot split itself."""

from __future__ import annotations

from urllib.parse import ParseResult


def host_list(parsed: ParseResult, default_port: int, what: str) -> list[tuple[str, int]]:
    """(host, port) of each comma-separated address after any ``user:password@``; ValueError naming
    ``what`` (e.g. "a sentinel address") for one without a host or with a bad port."""
    hosts = []
    for item in parsed.netloc.rsplit("@", 1)[-1].split(","):
        # One colon: host:port. None or several (a bare IPv6 address): the host alone.
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if not host:
            raise ValueError(f"{what} without a host in a {parsed.scheme}:// URL")
        try:
            hosts.append((host, int(port or default_port)))
        except ValueError:
            raise ValueError(f"{what} with a bad port in a {parsed.scheme}:// URL") from None
    return hosts
