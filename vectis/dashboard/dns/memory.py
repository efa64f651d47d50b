"""An in-memory provider for tests: real semantics, no network; can be switched `down`."""

from __future__ import annotations

import ipaddress

from vectis.dashboard.dns.base import DNSBackend, DNSError, record_type


class MemoryBackend(DNSBackend):
    name = "memory"

    def __init__(self, zone: str) -> None:
        self.zone = zone.rstrip(".").lower()
        self.records: dict[tuple[str, str], str] = {}
        self.down = False
        self.calls = 0

    def _check(self, name: str) -> str:
        self.calls += 1
        if self.down:
            raise DNSError("memory DNS provider is down")
        name = name.rstrip(".").lower()
        if not name.endswith("." + self.zone):
            raise DNSError(f"{name} is not inside the zone {self.zone}")
        return name

    async def ensure(self, name: str, ip: str) -> None:
        name = self._check(name)
        for rtype in ("A", "AAAA"):
            self.records.pop((name, rtype), None)
        self.records[(name, record_type(ip))] = str(ipaddress.ip_address(ip))

    async def delete(self, name: str) -> None:
        name = self._check(name)
        for rtype in ("A", "AAAA"):
            self.records.pop((name, rtype), None)

    async def lookup(self, name: str) -> list[str]:
        name = self._check(name)
        return [ip for (n, _), ip in sorted(self.records.items()) if n == name]
