"""``DF_PEER_IP_CHECK``: a registration's ``ip`` must be the address the request came from (issue 7).

The dfget API is unauthenticated by design, and the Go supernode takes the registered ip, port and path
on trust: anyone can announce a peer at any address and be offered to every later client. With the
check on, a registration naming another ip gets code 501 with the reason; dfget then tries its next
supernode, which a spoofer gets no further with either. Off by default, as in Go: a dfget behind NAT
registers its own (inside) address, which such a check would refuse.

Behind a load balancer the connection comes from the balancer, so the client's address is taken from
``X-Forwarded-For`` (haproxy's ``option forwardfor``), but only when the direct peer is in
``DF_TRUSTED_PROXIES``. The header is read from the right: each trusted hop appended the address it
saw, so the first untrusted address from the right is the client; whatever the client itself wrote
further left is never believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PeerAddress:
    """What the transport says about a request: the direct peer and its X-Forwarded-For values."""

    direct: str
    forwarded_for: tuple[str, ...] = ()


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=8)
def parse_trusted(text: str) -> tuple[IPNetwork, ...]:
    """``DF_TRUSTED_PROXIES``: comma-separated CIDRs or addresses; raises ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip())


def _trusted(address: IPAddress, trusted: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(peer: PeerAddress, trusted: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The client's address: the direct peer, or, from a trusted proxy, the rightmost untrusted hop
    of X-Forwarded-For. None when what the trusted proxy forwarded is not an address."""
    address = _address(peer.direct)
    if address is None or not _trusted(address, trusted):
        return address
    hops = [hop for value in peer.forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        forwarded = _address(hop)
        if forwarded is None:
            return None
        if not _trusted(forwarded, trusted):
            return forwarded
        address = forwarded  # a chain of trusted proxies: keep walking left
    return address


def ip_mismatch(registered_ip: str, peer: PeerAddress | None, trusted_proxies: str) -> str | None:
    """The refusal message when the check applies and the registered ip is not the client's; else None."""
    if peer is None:
        return None
    actual = client_address(peer, parse_trusted(trusted_proxies))
    if actual is not None and _address(registered_ip) == actual:
        return None
    seen = actual if actual is not None else "no usable address"
    return (f"registered ip {registered_ip} is not the address this request came from ({seen}); "
            "DF_PEER_IP_CHECK is on: a peer registers its own address")
