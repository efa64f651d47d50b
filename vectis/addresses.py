"""The rules for a worker's address, shared by the worker and the dashboard.

`unicast`: what an address must be to name a worker at all. Any unicast IPv4 or IPv6 address
is one; unspecified, multicast and broadcast addresses, and IPv6 zone indexes (they name a
link on one host, which no DNS record can hold), are refused.

`worker_address_problem`: what the dashboard may reach. Public unicast addresses, and others
only inside the networks the operator allows (VECTIS_WORKER_NETWORKS), so that an enrollment
token cannot point the dashboard at its own network or at a cloud metadata service.
"""

from __future__ import annotations

import ipaddress

BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def unicast(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address `text` names (an IPv4-mapped IPv6 address as IPv4); ValueError says why not."""
    shown = text if len(text) <= 45 else text[:45] + "..."
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{shown!r} is not an IP address") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:
            raise ValueError(f"{shown!r} carries a zone index")
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
    if addr.is_unspecified:
        raise ValueError(f"{addr} is the unspecified address")
    if addr.is_multicast:
        raise ValueError(f"{addr} is a multicast address")
    if addr == BROADCAST:
        raise ValueError(f"{addr} is the broadcast address")
    return addr


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 prefixes that carry an IPv4 address inside: they are as public as the address they carry.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def is_public(addr: Address) -> bool:
    """A globally routable unicast address: not private, loopback, link-local, CGNAT, reserved."""
    if not addr.is_global or addr.is_multicast:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in _NAT64_LOCAL:
            return False
        inner = _embedded_v4(addr)
        if inner is not None:
            return is_public(inner)
    return True


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (`10.0.0.0/8,127.0.0.0/8`); ValueError names the bad one."""
    networks: list[Network] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item[:64]!r} is not a network such as 10.0.0.0/8") from None
    return tuple(networks)


def worker_address_problem(addr: Address, allowed: tuple[Network, ...]) -> str | None:
    """Why the dashboard must not reach a worker at `addr` (None: it may).

    Public unicast addresses are always allowed; any other only inside one of `allowed`, so
    an enrollment token cannot point the dashboard at its own network or the cloud's metadata
    service.
    """
    if is_public(addr) or any(addr in net for net in allowed if net.version == addr.version):
        return None
    return (
        f"{addr} is not a public address and not in VECTIS_WORKER_NETWORKS "
        "(the dashboard's setting for private worker networks)"
    )
