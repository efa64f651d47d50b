"""The default backend: no DNS at all, so that a first run needs no cloud account."""

from __future__ import annotations

from vectis.dashboard.dns.base import DNSBackend


class NoneBackend(DNSBackend):
    name = "none"
    provisions = False

    async def ensure(self, name: str, ip: str) -> None:
        return None

    async def delete(self, name: str) -> None:
        return None

    async def lookup(self, name: str) -> list[str]:
        return []
