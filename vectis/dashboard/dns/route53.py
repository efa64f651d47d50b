"""Route53: records in one public hosted zone, changes batched under the API's rate limit.

Settings (environment or flags, by variable name):
  VECTIS_ROUTE53_ZONE_ID       the hosted zone's ID (`Z...` or `/hostedzone/Z...`); required.
                               Its name must equal the dashboard's zone; it must be public.
  VECTIS_ROUTE53_PROFILE       an AWS profile for boto3; default: boto3's credential chain
  VECTIS_DNS_TTL               the records' TTL in seconds; default 60
  VECTIS_ROUTE53_BATCH_WINDOW  seconds to gather changes into one batch; default 0.5
  VECTIS_ROUTE53_MAX_RPS       Route53 API requests per second, at most; default 4 (the
                               account's limit is 5, shared with every other tool)
boto3's own variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...) apply.

ensure()/delete() enqueue a change and wait for its own outcome. A flusher gathers changes
for the window (the last one for a name wins), reads the names' record sets, plans each name
(`batching`), and sends ChangeBatches within Route53's limits. Throttling and
PriorRequestNotComplete are retried with exponential backoff and jitter; a batch refused as
invalid is split in halves until the bad name is alone, so it cannot block the others. Each
accepted change is followed with GetChange until INSYNC, in the background.
Ownership: see `policy` (a TXT "heritage=vectis" marker at the name, written in the same batch).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vectis.dashboard.dns.base import DNSBackend, DNSError
from vectis.dashboard.dns.batching import (
    NotOwned,
    RecordSet,
    Unit,
    pack,
    plan_delete,
    plan_ensure,
    to_change_batch,
)
from vectis.dashboard.dns.policy import canonical_ip, name_in_zone, normalize_zone, number, ttl

log = logging.getLogger("vectis.dns.route53")

Sleep = Callable[[float], Awaitable[None]]
RETRYABLE = {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"}
REJECTED = {"InvalidChangeBatch", "InvalidInput"}
PAGE = 300  # the most ListResourceRecordSets returns at once


class _Rejected(DNSError):
    """Route53 refused a batch as invalid (split it, or re-read a stale name)."""


@dataclass
class _Pending:
    """The latest wish for one name and everyone waiting for it."""

    ip: str | None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def settle(self, error: BaseException | None = None) -> None:
        for fut in self.waiters:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)


class _RateLimit:
    """At most `rate` requests per second, spaced evenly."""

    def __init__(self, rate: float, clock: Callable[[], float], sleep: Sleep) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            now = self.clock()
            if self.next > now:
                await self.sleep(self.next - now)
                now = self.next
            self.next = now + self.interval


class Route53Backend(DNSBackend):
    """Records in a Route53 hosted zone, with batched, rate-capped, retried changes."""

    name = "route53"

    def __init__(
        self,
        zone: str,
        zone_id: str,
        *,
        ttl: int = 60,
        profile: str | None = None,
        window: float = 0.5,
        rate: float = 4.0,
        client: Any = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        max_attempts: int = 8,
        insync_timeout: float = 600.0,
        follow: bool = True,
    ) -> None:
        self.zone = normalize_zone(zone)
        self.zone_id = zone_id.strip().rsplit("/", 1)[-1]
        if not self.zone_id:
            raise DNSError("the route53 DNS backend needs VECTIS_ROUTE53_ZONE_ID")
        self.ttl = ttl
        self.profile = profile
        self.window = window
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter
        self.max_attempts = max_attempts
        self.insync_timeout = insync_timeout
        self.follow = follow
        self.limit = _RateLimit(rate, clock, sleep)
        self.client = client
        #: API calls made, by operation name (for figures and tests).
        self.calls: dict[str, int] = {}
        #: Status of every accepted change: PENDING until GetChange says INSYNC.
        self.changes: dict[str, str] = {}
        self.zone_size = 0
        self._pending: dict[str, _Pending] = {}
        self._wakeup: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._closed = False
        self._flushing = False
        self._first_at = 0.0

    @classmethod
    def from_options(cls, zone: str, options: Mapping[str, str]) -> Route53Backend:
        """Build from settings by variable name (see the module docstring)."""
        zone_id = (options.get("VECTIS_ROUTE53_ZONE_ID") or "").strip()
        if not zone_id:
            raise DNSError("the route53 DNS backend needs VECTIS_ROUTE53_ZONE_ID (the hosted zone)")
        return cls(
            zone,
            zone_id,
            ttl=ttl(options),
            profile=(options.get("VECTIS_ROUTE53_PROFILE") or "").strip() or None,
            window=number(options, "VECTIS_ROUTE53_BATCH_WINDOW", 0.5),
            rate=number(options, "VECTIS_ROUTE53_MAX_RPS", 4.0, low=0.1),
        )

    # -- the API, in a thread, rate-capped ------------------------------------------------

    def _make_client(self) -> Any:
        import boto3  # type: ignore[import-untyped]
        import botocore.config  # type: ignore[import-untyped]
        import botocore.exceptions  # type: ignore[import-untyped]

        try:
            session = boto3.session.Session(profile_name=self.profile)
        except botocore.exceptions.ProfileNotFound:
            raise DNSError(f"the AWS profile {self.profile!r} does not exist") from None
        # max_attempts is left to botocore (3, or AWS_MAX_ATTEMPTS) so operators can tune it.
        config = botocore.config.Config(
            retries={"mode": "standard"}, connect_timeout=5, read_timeout=20
        )
        return session.client(
            "route53", region_name=session.region_name or "us-east-1", config=config
        )

    async def _call(self, operation: str, **params: Any) -> Any:
        """One Route53 call; errors become DNSError (`_Rejected` for an invalid batch)."""
        import botocore.exceptions

        if self.client is None:
            self.client = await asyncio.to_thread(self._make_client)
        method = getattr(self.client, _snake(operation))
        for attempt in range(self.max_attempts):
            await self.limit.wait()
            self.calls[operation] = self.calls.get(operation, 0) + 1
            try:
                return await asyncio.to_thread(method, **params)
            except botocore.exceptions.ClientError as exc:
                err = exc.response.get("Error", {})
                code, message = err.get("Code", "Error"), err.get("Message", "")
                if code in RETRYABLE and attempt + 1 < self.max_attempts:
                    await self.sleep(self._backoff(attempt))
                    continue
                text = f"Route53 {operation} failed: {code}: {message}".rstrip(": ")
                if code in REJECTED:
                    raise _Rejected(text) from None
                raise DNSError(text) from None
            except botocore.exceptions.NoCredentialsError:
                raise DNSError(
                    "no AWS credentials found (set a profile, AWS_* variables or a role)"
                ) from None
            except botocore.exceptions.BotoCoreError as exc:
                raise DNSError(f"cannot reach Route53 ({operation}): {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        delay: float = min(20.0, 0.5 * 2.0**attempt)
        return delay / 2 + delay / 2 * self.jitter()

    async def _read(self, names: Sequence[str]) -> dict[str, list[RecordSet]]:
        """The record sets of each name: one short listing per name, or the whole zone."""
        found: dict[str, list[RecordSet]] = {n: [] for n in names}
        zone_pages = math.ceil(max(self.zone_size, 1) / PAGE)
        starts = [None] if len(names) > zone_pages else list(names)
        for start in starts:
            params: dict[str, Any] = {"HostedZoneId": self.zone_id, "MaxItems": str(PAGE)}
            if start is not None:
                params.update(StartRecordName=start + ".", MaxItems="10")
            total = 0
            while True:
                page = await self._call("ListResourceRecordSets", **params)
                items = [RecordSet.from_api(i) for i in page.get("ResourceRecordSets", [])]
                total += len(items)
                for rs in items:
                    if rs.name in found:
                        found[rs.name].append(rs)
                past = start is not None and any(rs.name != start for rs in items)
                if not page.get("IsTruncated") or past:
                    break
                params["StartRecordName"] = page["NextRecordName"]
                params["StartRecordType"] = page["NextRecordType"]
                if "NextRecordIdentifier" in page:
                    params["StartRecordIdentifier"] = page["NextRecordIdentifier"]
            if start is None:
                self.zone_size = total
        return found

    # -- the interface ----------------------------------------------------------------------

    async def validate(self) -> None:
        """The hosted zone exists, is public, and is exactly the configured zone."""
        resp = await self._call("GetHostedZone", Id=self.zone_id)
        hosted = resp["HostedZone"]
        name = hosted["Name"].rstrip(".").lower()
        if hosted.get("Config", {}).get("PrivateZone"):
            raise DNSError(f"the Route53 hosted zone {self.zone_id} ({name}) is private")
        if name != self.zone:
            raise DNSError(
                f"the Route53 hosted zone {self.zone_id} is {name}, not the zone {self.zone}"
            )
        self.zone_size = int(hosted.get("ResourceRecordSetCount", 0))

    async def ensure(self, name: str, ip: str) -> None:
        await self._enqueue(name_in_zone(name, self.zone), canonical_ip(ip))

    async def delete(self, name: str) -> None:
        await self._enqueue(name_in_zone(name, self.zone), None)

    async def lookup(self, name: str) -> list[str]:
        return (await self.lookup_many([name]))[name]

    async def lookup_many(self, names: Sequence[str]) -> dict[str, list[str]]:
        """`lookup` for many names at the cost of one zone listing (used by `dns check`)."""
        clean = {n: name_in_zone(n, self.zone) for n in names}
        sets = await self._read(sorted(set(clean.values())))
        return {
            n: [v for rs in sets[c] if rs.type in ("A", "AAAA") for v in rs.values]
            for n, c in clean.items()
        }

    async def close(self) -> None:
        self._closed = True
        for task in (self._flusher, self._follower):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        pending, self._pending = self._pending, {}
        for wish in pending.values():
            wish.settle(DNSError("the Route53 backend was closed before the change was sent"))

    async def settled(self) -> None:
        """Wait until every queued change is sent and every accepted one is followed."""
        while self._pending or self._flushing:
            await asyncio.sleep(0.005)
        if self._follower is not None:
            await asyncio.gather(self._follower, return_exceptions=True)

    # -- batching -----------------------------------------------------------------------------

    async def _enqueue(self, name: str, ip: str | None) -> None:
        if self._closed:
            raise DNSError("the Route53 backend is closed")
        loop = asyncio.get_running_loop()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        fut: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            self._first_at = self.clock()
        wish = self._pending.get(name)
        if wish is None:
            wish = self._pending[name] = _Pending(ip)
        wish.ip = ip  # the last wish for a name wins; earlier callers share its outcome
        wish.waiters.append(fut)
        self._wakeup.set()
        await fut

    async def _flush_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            # Changes that queued up during the previous flush have waited long enough.
            left = self._first_at + self.window - self.clock()
            if left > 0:
                await self.sleep(left)
            batch, self._pending = self._pending, {}
            self._wakeup.clear()
            self._flushing = True
            try:
                await self._flush(batch)
            except asyncio.CancelledError:
                for wish in batch.values():
                    wish.settle(DNSError("the Route53 backend was closed"))
                raise
            except Exception as exc:  # one bad flush must not stop the flusher
                log.exception("Route53 flush failed")
                for wish in batch.values():
                    wish.settle(DNSError(f"Route53 change failed: {exc}"))
            finally:
                self._flushing = False

    async def _flush(self, wishes: dict[str, _Pending]) -> None:
        try:
            current = await self._read(list(wishes))
        except DNSError as exc:
            for wish in wishes.values():
                wish.settle(exc)
            return
        units: list[Unit] = []
        for name, wish in wishes.items():
            unit = self._plan(name, wish, current[name])
            if unit is not None:
                units.append(unit)
        for batch in pack(units):
            await self._submit(batch, wishes, retried=False)

    def _plan(self, name: str, wish: _Pending, current: list[RecordSet]) -> Unit | None:
        """The name's unit; None (and the waiters settled) when nothing is to be sent."""
        try:
            if wish.ip is None:
                unit = plan_delete(name, current)
            else:
                unit = plan_ensure(name, wish.ip, current, self.ttl)
        except NotOwned as exc:
            wish.settle(exc)
            return None
        if not unit.changes:
            wish.settle()
            return None
        return unit

    async def _submit(self, units: list[Unit], wishes: dict[str, _Pending], retried: bool) -> None:
        """Send one batch; split it when refused; settle every name's waiters."""
        try:
            resp = await self._call(
                "ChangeResourceRecordSets",
                HostedZoneId=self.zone_id,
                ChangeBatch=to_change_batch(units),
            )
        except _Rejected as exc:
            if len(units) > 1:
                half = len(units) // 2
                await self._submit(units[:half], wishes, retried)
                await self._submit(units[half:], wishes, retried)
                return
            name = units[0].name
            if retried:
                wishes[name].settle(exc)
                return
            # Alone and refused: most likely a stale read (the record changed meanwhile).
            try:
                current = (await self._read([name]))[name]
            except DNSError as err:
                wishes[name].settle(err)
                return
            unit = self._plan(name, wishes[name], current)
            if unit is not None:
                await self._submit([unit], wishes, retried=True)
            return
        except DNSError as exc:
            for unit in units:
                wishes[unit.name].settle(exc)
            return
        change_id = resp["ChangeInfo"]["Id"].rsplit("/", 1)[-1]
        self.changes[change_id] = resp["ChangeInfo"].get("Status", "PENDING")
        for unit in units:
            wishes[unit.name].settle()
        if (
            self.follow
            and self.changes[change_id] != "INSYNC"
            and (self._follower is None or self._follower.done())
        ):
            self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        """Poll GetChange for every PENDING change until INSYNC, within insync_timeout."""
        started = self.clock()
        delay = 1.0
        while True:
            waiting = [cid for cid, status in self.changes.items() if status != "INSYNC"]
            if not waiting:
                return
            if self.clock() - started > self.insync_timeout:
                log.warning(
                    "Route53 changes %s not INSYNC after %.0f s", waiting, self.insync_timeout
                )
                return
            await self.sleep(delay)
            delay = min(delay * 2, 15.0)
            for cid in waiting:
                try:
                    resp = await self._call("GetChange", Id=cid)
                except DNSError as exc:
                    log.warning("Route53 GetChange %s: %s", cid, exc.message)
                    continue
                self.changes[cid] = resp["ChangeInfo"].get("Status", "PENDING")


def _snake(operation: str) -> str:
    """ListResourceRecordSets -> list_resource_record_sets (boto3's method names)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
