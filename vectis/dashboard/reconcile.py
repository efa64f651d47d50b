"""`vectis dashboard dns check`: the records the dashboard should have, against the provider.

For every worker the store expects `<id>.<zone>` to hold exactly its IP; every name whose
deletion is still queued (a deleted worker) should hold nothing. Each name is judged `ok`,
`missing`, `wrong` or `extra` from what the DNS backend holds, optionally fixed (`--fix`),
and asked of the zone's authoritative servers, so an operator sees that it really resolves.
The background retry of pending records lives in the dashboard service; this is the audit.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from vectis.dashboard.dns.base import DNSBackend, DNSError
from vectis.dashboard.settings import DashboardSettings
from vectis.dashboard.store import Store
from vectis.envsettings import PORT_RANGE
from vectis.errors import ConfigError

STATES = ("ok", "missing", "wrong", "extra", "error")
CONCURRENCY = 20


@dataclass
class RecordCheck:
    """One name: what should be, what the provider holds, what resolves."""

    name: str
    worker_id: str | None
    expected: list[str]
    provider: list[str]
    state: str
    dns_status: str | None = None
    resolved: list[str] | None = None
    fixed: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    zone: str
    backend: str
    records: list[RecordCheck] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for r in self.records if r.state == s) for s in STATES}

    @property
    def clean(self) -> bool:
        """Every name holds what it should (fixed ones included)."""
        return all(r.state == "ok" or r.fixed for r in self.records)

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "backend": self.backend,
            "servers": self.servers,
            "counts": self.counts,
            "fixed": sum(1 for r in self.records if r.fixed),
            "clean": self.clean,
            "records": [r.to_json() for r in self.records],
        }


def _canon(ips: Sequence[str]) -> list[str]:
    return sorted(str(ipaddress.ip_address(ip)) for ip in ips)


def judge(expected: Sequence[str], provider: Sequence[str]) -> str:
    """ok, missing, wrong or extra (pure)."""
    want, have = _canon(expected), _canon(provider)
    if want == have:
        return "ok"
    if not want:
        return "extra"
    return "missing" if not have else "wrong"


def split_server(text: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT`, `IPv6` or `[IPv6]:PORT` -> (host, port); port 53 by default."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    low, high = PORT_RANGE
    if not host or (port and not (port.isdigit() and low <= int(port) <= high)):
        raise ConfigError(f"--server {text!r}: expected HOST, HOST:PORT or [IPv6]:PORT")
    return host, int(port) if port else 53


class AuthoritativeResolver:
    """Asks the zone's own servers (its NS records, or one configured server) directly."""

    def __init__(self, zone: str, server: str | None = None, timeout: float = 3.0) -> None:
        self.zone = zone
        self.server = server
        self.timeout = timeout
        self.servers: list[tuple[str, int]] = []

    async def _address(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, 53, proto=6)
        except OSError as exc:
            raise DNSError(f"cannot resolve the name server {host}: {exc}") from None
        return sorted({str(i[4][0]) for i in infos})

    async def discover(self) -> list[str]:
        """The servers to ask: the configured one, else the zone's NS records."""
        if self.server:
            host, number = split_server(self.server)
            self.servers = [(a, number) for a in await self._address(host)]
        else:
            import dns.asyncresolver
            import dns.exception

            try:
                answer = await dns.asyncresolver.resolve(self.zone + ".", "NS", lifetime=5)
            except dns.exception.DNSException as exc:
                raise DNSError(f"cannot find the name servers of {self.zone}: {exc}") from None
            for ns in answer:
                for address in await self._address(ns.target.to_text().rstrip(".")):
                    self.servers.append((address, 53))
        return [f"{a}:{p}" for a, p in self.servers]

    async def resolve(self, name: str) -> list[str]:
        """A and AAAA of `name` from the first server that answers (not recursive)."""
        import dns.asyncquery
        import dns.exception
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdatatype

        problems: list[str] = []
        for address, port in self.servers:
            found: list[str] = []
            try:
                for rtype in ("A", "AAAA"):
                    query = dns.message.make_query(name + ".", rtype)
                    query.flags &= ~dns.flags.RD
                    resp = await dns.asyncquery.udp_with_fallback(
                        query, address, timeout=self.timeout, port=port
                    )
                    answer = resp[0]
                    if answer.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                        raise DNSError(dns.rcode.to_text(answer.rcode()))
                    wanted = dns.rdatatype.from_text(rtype)
                    rrsets = [rr for rr in answer.answer if rr.rdtype == wanted]
                    found += [r.to_text() for rr in rrsets for r in rr]
                return sorted(found)
            except (OSError, dns.exception.DNSException, DNSError) as exc:
                problems.append(f"{address}:{port}: {exc}")
        raise DNSError("no authoritative answer (" + "; ".join(problems) + ")")


async def _lookups(backend: DNSBackend, names: list[str]) -> dict[str, list[str] | DNSError]:
    """What the provider holds for each name; one bulk read when the backend offers it."""
    bulk = getattr(backend, "lookup_many", None)
    if bulk is not None:
        try:
            return dict(await bulk(names))
        except DNSError:
            pass  # fall back to names one by one, so one bad name is reported alone
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(name: str) -> list[str] | DNSError:
        async with gate:
            try:
                return await backend.lookup(name)
            except DNSError as exc:
                return exc

    found = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, found, strict=True))


async def check(
    store: Store,
    backend: DNSBackend,
    zone: str,
    *,
    fix: bool = False,
    resolver: AuthoritativeResolver | None = None,
    retry_max: float = 300.0,
) -> Report:
    """Compare, optionally fix, and optionally resolve every name the dashboard cares about."""
    from vectis.dashboard.model import after_dns

    report = Report(zone=zone, backend=backend.name)
    workers = await store.list_workers()
    orphans = [n for n, _ in await store.dns_orphans_due(float("inf"), 1_000_000)]
    wanted: dict[str, tuple[str | None, list[str], str | None]] = {
        n: (None, [], None) for n in orphans
    }
    for w in workers:
        wanted[w.subdomain] = (w.id, [w.ip], w.dns_status)
    held = await _lookups(backend, list(wanted))
    for name, (worker_id, expected, dns_status) in sorted(wanted.items()):
        got = held[name]
        if isinstance(got, DNSError):
            report.records.append(
                RecordCheck(name, worker_id, expected, [], "error", dns_status, error=got.message)
            )
        else:
            state = judge(expected, got)
            report.records.append(
                RecordCheck(name, worker_id, expected, sorted(got), state, dns_status)
            )
    if fix:
        gate = asyncio.Semaphore(CONCURRENCY)
        by_id = {w.id: w for w in workers}

        async def repair(rec: RecordCheck) -> None:
            async with gate:
                try:
                    if rec.state == "extra":
                        await backend.delete(rec.name)
                        await store.set_dns_orphan(rec.name, None, 0)
                    else:
                        await backend.ensure(rec.name, rec.expected[0])
                except DNSError as exc:
                    rec.error = exc.message
                    return
                rec.fixed = True
                if rec.worker_id in by_id:
                    ip, at = rec.expected[0], datetime.now(UTC)

                    def mutate(current: Any) -> Any:
                        if current.ip != ip:
                            return None
                        return after_dns(current, at, True, None, retry_max), []

                    changed = await store.update_workers([rec.worker_id], mutate, at)
                    if changed:
                        rec.dns_status = changed[0].dns_status

        await asyncio.gather(*(repair(r) for r in report.records if r.state != "ok"))
    if resolver is not None and report.records:
        report.servers = await resolver.discover()
        gate = asyncio.Semaphore(CONCURRENCY)

        async def ask(rec: RecordCheck) -> None:
            async with gate:
                try:
                    rec.resolved = await resolver.resolve(rec.name)
                except DNSError as exc:
                    rec.error = rec.error or exc.message

        await asyncio.gather(*(ask(r) for r in report.records))
    return report


async def check_dashboard(
    settings: DashboardSettings, *, fix: bool, server: str | None, resolve: bool
) -> Report:
    """Open the dashboard's own store and DNS backend (its settings), and run `check`."""
    from vectis.dashboard.dns import create_backend
    from vectis.dashboard.sqlite_store import SQLiteStore

    if not settings.db_path.exists():
        raise ConfigError(
            f"{settings.db_path}: no dashboard database here (set --data-dir / VECTIS_DATA_DIR)"
        )
    backend = create_backend(settings.dns_backend, settings.zone, settings.dns_options)
    if not backend.provisions:
        await backend.close()
        return Report(zone=settings.zone, backend=backend.name)
    store = SQLiteStore(settings.db_path)
    await store.open()
    try:
        await backend.validate()
        resolver = AuthoritativeResolver(settings.zone, server) if resolve else None
        report = await check(
            store, backend, settings.zone, fix=fix, resolver=resolver,
            retry_max=settings.dns_retry_max,
        )  # fmt: skip
    finally:
        await backend.close()
        await store.close()
    return report
