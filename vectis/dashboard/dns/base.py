"""The DNS backend interface: every provider fills these few methods.

Names are fully qualified without the trailing dot (`brave-otter-3f2a.fleet.example.com`).
`ensure` and `delete` are idempotent: ensuring a record that already points at the IP, or
deleting one that is gone, succeeds. A failure raises `DNSError`; the caller keeps the
worker's DNS state `pending`/`failed` and the reconciler retries.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from typing import ClassVar

from vectis.errors import ConfigError, VectisError


class DNSError(VectisError):
    http_status = 502
    code = "dns_error"


class DNSSettingsError(DNSError, ConfigError):
    """A DNS backend's settings are missing or wrong: a configuration error (exit 3)."""


def record_type(ip: str) -> str:
    """`A` for an IPv4 address, `AAAA` for IPv6."""
    return "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"


class DNSBackend(ABC):
    """One DNS provider. Methods are async; blocking clients run in a thread."""

    name: ClassVar[str]
    #: False for `none`: the dashboard then reports every worker's dns_status as `none`.
    provisions: ClassVar[bool] = True

    async def validate(self) -> None:
        """Check the settings and the provider at start; raise DNSError with the fix."""

    @abstractmethod
    async def ensure(self, name: str, ip: str) -> None:
        """Make `name` resolve to exactly `ip` (A or AAAA), creating or updating it."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Remove the record(s) Vectis made for `name`; a record already gone is success."""

    @abstractmethod
    async def lookup(self, name: str) -> list[str]:
        """The addresses the provider holds for `name` (empty when none)."""

    async def close(self) -> None:
        """Release clients and background tasks."""
