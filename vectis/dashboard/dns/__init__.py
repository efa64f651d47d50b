"""DNS backends behind one small interface (see `base.DNSBackend`)."""

from __future__ import annotations

from collections.abc import Mapping

from vectis.dashboard.dns.base import DNSBackend, DNSError, DNSSettingsError

BACKENDS = ("none", "memory", "route53", "rfc2136")


def create_backend(kind: str, zone: str, options: Mapping[str, str]) -> DNSBackend:
    """Build the backend named `kind`; `options` are settings by variable name (env + flags).

    Heavy client libraries (boto3, dnspython) are imported only by the backend that uses them.
    What goes wrong here is a settings problem: DNSSettingsError, a configuration error.
    """
    try:
        return _build(kind, zone, options)
    except DNSSettingsError:
        raise
    except DNSError as exc:
        raise DNSSettingsError(exc.message) from None


def _build(kind: str, zone: str, options: Mapping[str, str]) -> DNSBackend:
    if kind == "none":
        from vectis.dashboard.dns.none import NoneBackend

        return NoneBackend()
    if kind == "memory":
        from vectis.dashboard.dns.memory import MemoryBackend

        return MemoryBackend(zone)
    if kind == "route53":
        from vectis.dashboard.dns.route53 import Route53Backend

        return Route53Backend.from_options(zone, options)
    if kind == "rfc2136":
        from vectis.dashboard.dns.rfc2136 import RFC2136Backend

        return RFC2136Backend.from_options(zone, options)
    raise DNSSettingsError(f"unknown DNS backend {kind!r}; choose one of {', '.join(BACKENDS)}")
