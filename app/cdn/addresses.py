"""What kind of address a source host resolves to, for the source policy (app.cdn.policy).

An IPv6 address that carries an IPv4 address is judged as that IPv4 address: a NAT64 gateway, a 6to4
relay or a dual-stack socket delivers the connection to it, so ``2002:a9fe:a9fe::`` is the metadata
service as surely as ``169.254.169.254`` is. The ranges are listed here rather than taken from
``ipaddress``'s ``is_private`` / ``is_global``, whose meaning changed between Python releases; those
only serve as the fallback that keeps every other non-public range refused.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


class AddressClass(StrEnum):
    METADATA = "metadata"  # cloud instance metadata: instance credentials live there
    LINK_LOCAL = "link_local"
    LOOPBACK = "loopback"  # this host: in cluster mode, the replica's own Redis and Postgres
    PRIVATE = "private"  # RFC 1918, carrier-grade NAT, unique local: where datacenter sources live
    SPECIAL = "special"  # unspecified, multicast, reserved, documentation, benchmarking, ...
    PUBLIC = "public"


METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
)
LINK_LOCAL = _nets("169.254.0.0/16", "fe80::/10")
LOOPBACK = _nets("127.0.0.0/8", "::1/128")
PRIVATE = _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
# Named so that they stay refused whatever the Python release thinks of them. 0.0.0.0 and :: connect to
# this host on Linux; multicast and the reserved block cannot carry a TCP connection to a source;
# fec0::/10 is the deprecated site-local range (private in practice).
SPECIAL = _nets("0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::/128", "ff00::/8", "fec0::/10")

# IPv6 forms whose low 32 bits are an IPv4 address (RFC 4291 §2.5.5, RFC 2765, RFC 6052).
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated, but a stack may still route it
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, and the name of the form; None for plain IPv6."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address.sixtofour is not None:  # 2002::/16, the IPv4 address in bits 16..48
        return address.sixtofour, "6to4"
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_TRANSLATED:
        return low, "IPv4-translated"
    if address in _NAT64:
        return low, "NAT64"
    # :: and ::1 are inside ::/96 but are the unspecified and loopback addresses, not 0.0.0.0/0.0.0.1.
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return low, "IPv4-compatible"
    return None


def judged(address: IPAddress) -> tuple[IPAddress, str]:
    """The address the policy judges (the embedded IPv4 address, if any) and the embedding's name ("")."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return inner
    return address, ""


def classify(address: IPAddress) -> AddressClass:
    """The class of an address already unwrapped by :func:`judged`."""
    if address in METADATA_ADDRESSES:
        return AddressClass.METADATA
    for nets, cls in ((LINK_LOCAL, AddressClass.LINK_LOCAL), (LOOPBACK, AddressClass.LOOPBACK),
                      (SPECIAL, AddressClass.SPECIAL), (PRIVATE, AddressClass.PRIVATE)):
        if any(address in net for net in nets):
            return cls
    # Every other range Python knows as non-public (documentation, benchmarking, IETF protocol
    # assignments such as Teredo, discard-only, ...) stays refused unless allowlisted.
    if not address.is_global or address.is_multicast:
        return AddressClass.SPECIAL
    return AddressClass.PUBLIC


def describe(cls: AddressClass) -> str:
    return {
        AddressClass.METADATA: "a cloud metadata address",
        AddressClass.LINK_LOCAL: "a link-local address",
        AddressClass.LOOPBACK: "a loopback address",
        AddressClass.PRIVATE: "a private address",
        AddressClass.SPECIAL: "a special-purpose (non-public) address",
        AddressClass.PUBLIC: "a public address",
    }[cls]
