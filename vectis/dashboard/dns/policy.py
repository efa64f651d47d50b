"""What every real provider agrees on: the ownership marker, zone membership, settings.

Ownership rule: Vectis touches a name only if the name holds no records at all (it then
creates the address record together with a TXT record `"heritage=vectis"` at the same name,
in the same atomic change), or if the name already carries that TXT marker. A name holding
records without the marker belongs to someone else: it is never overwritten or deleted, and
the call fails with a DNSError that says so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from vectis.dashboard.dns.base import DNSError, DNSSettingsError
from vectis.envsettings import FOREVER, env_float, env_int
from vectis.errors import ConfigError

#: The marker's text (one TXT string); on the wire of Route53 it is written quoted.
MARKER = "heritage=vectis"
DEFAULT_TTL = 60


def normalize_zone(zone: str) -> str:
    """The zone in lower case without the trailing dot; refuses an empty zone."""
    zone = zone.strip().rstrip(".").lower()
    if not zone:
        raise DNSError("no DNS zone is configured (set --zone / VECTIS_ZONE)")
    return zone


def name_in_zone(name: str, zone: str) -> str:
    """`name` in lower case without the trailing dot, if it lies strictly inside `zone`."""
    clean = name.strip().rstrip(".").lower()
    if not clean.endswith("." + zone) or clean.startswith("."):
        raise DNSError(f"{clean or name!r} is not inside the zone {zone}; refused")
    if any(not label or len(label) > 63 for label in clean.split(".")) or len(clean) > 253:
        raise DNSError(f"{clean!r} is not a valid DNS name")
    return clean


def canonical_ip(ip: str) -> str:
    """The address in its canonical text form; refuses anything that is not an IP."""
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise DNSError(f"{ip!r} is not an IP address") from None


def number(
    options: Mapping[str, str], key: str, default: float, *, low: float = 0, high: float = FOREVER
) -> float:
    """A numeric setting from `options`, or `default`; a bad value names the setting."""
    try:
        return env_float(options, key, default, low, high)
    except ConfigError as exc:
        raise DNSSettingsError(exc.message) from None


def integer(options: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    """An integer setting from `options`, or `default`; a bad value names the setting."""
    try:
        return env_int(options, key, default, low, high)
    except ConfigError as exc:
        raise DNSSettingsError(exc.message) from None


def ttl(options: Mapping[str, str]) -> int:
    """VECTIS_DNS_TTL: seconds, default 60, between 1 and 2,147,483,647."""
    return integer(options, "VECTIS_DNS_TTL", DEFAULT_TTL, 1, 2**31 - 1)
