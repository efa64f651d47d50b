"""The one rule for a worker's address (SPEC section 3), shared by the worker and the dashboard.

Any unicast IPv4 or IPv6 address is accepted, private and loopback included (a demo runs on
one host); unspecified, multicast and broadcast addresses, and IPv6 zone indexes (they name a
link on one host, which no DNS record can hold), are refused.
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
