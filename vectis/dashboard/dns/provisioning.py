"""Each worker's DNS record, kept in step with the registry in the background.

A registration, a moved IP or a new zone queues the worker's record; this loop hands the due
records to the backend in batches (so that a batching backend, Route53, turns a burst into a
few change requests), retries failures with exponential backoff, and deletes the records of
deleted workers, retrying those too. A DNS failure never fails the call that queued it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vectis.dashboard.dns.base import DNSBackend
from vectis.dashboard.model import Worker, after_dns
from vectis.dashboard.replicas import AlwaysLeader, Leadership
from vectis.dashboard.settings import DashboardSettings
from vectis.dashboard.store import Store
from vectis.untrusted import shown

log = logging.getLogger("vectis.dashboard")

DNS_TIMEOUT = 30.0
# Records handed to the backend at once: a backend that batches (Route53) turns a burst of
# registrations into a few change requests only if it sees them together.
DNS_BATCH = 1000
DNS_POLL = 1.0


class Provisioning:
    """The background loop over due records and orphans, woken when something is queued."""

    def __init__(
        self,
        settings: DashboardSettings,
        store: Store,
        backend: DNSBackend,
        clock: Callable[[], float],
        lead: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.clock = clock
        #: replicas on one database: only the one that holds the lead changes DNS
        self.lead = lead or AlwaysLeader()
        self._wake = asyncio.Event()

    def due(self) -> None:
        """Something was queued: run a pass now rather than at the next poll."""
        self._wake.set()

    async def follow_zone(self) -> None:
        """At start: a changed backend or zone queues every worker's record again."""
        where = f"{self.settings.dns_backend}:{self.settings.zone}"
        if await self.store.get_meta("dns") != where:
            moved = await self.store.rezone(self.settings.zone)
            await self.store.set_meta("dns", where)
            if moved:
                log.info("DNS is now %s: %d worker records queued", where, moved)

    async def remove(self, subdomain: str) -> None:
        """Delete a deleted worker's record now, or queue it to be retried."""
        if not self.backend.provisions:
            return
        if self.lead.shared:
            # Replicas: the one running the DNS loop deletes it, in its next batch.
            await self.store.add_dns_orphan(subdomain, self.clock())
            self.due()
            return
        try:
            await asyncio.wait_for(self.backend.delete(subdomain), DNS_TIMEOUT)
        except Exception as exc:
            log.warning("DNS delete of %s failed (%s); retrying later", subdomain, exc)
            retry = min(2.0, self.settings.dns_retry_max)
            await self.store.add_dns_orphan(subdomain, self.clock() + retry)
            self.due()

    async def _attempt(self, w: Worker) -> float:
        """One try at `w`'s record; the time of its next try (inf when done)."""
        error: str | None = None
        try:
            await asyncio.wait_for(self.backend.ensure(w.subdomain, w.ip), DNS_TIMEOUT)
        except Exception as exc:
            error = shown(str(exc)) or type(exc).__name__
            log.warning("DNS record %s -> %s failed: %s", w.subdomain, w.ip, error)
        at = datetime.fromtimestamp(self.clock(), UTC)
        tried_ip = w.ip

        def mutate(current: Worker) -> Any:
            if current.ip != tried_ip:
                return None  # it moved meanwhile; the new address is already queued
            new = after_dns(current, at, error is None, error, self.settings.dns_retry_max)
            return new, []

        changed = await self.store.update_workers([w.id], mutate, at)
        return changed[0].dns_next_at if changed and error is not None else float("inf")

    async def _orphan(self, name: str, attempts: int) -> float:
        try:
            await asyncio.wait_for(self.backend.delete(name), DNS_TIMEOUT)
        except Exception as exc:
            delay = min(self.settings.dns_retry_max, 2.0 ** min(attempts + 1, 20))
            log.warning("DNS delete of %s failed again (%s)", name, exc)
            await self.store.set_dns_orphan(name, attempts + 1, self.clock() + delay)
            return self.clock() + delay
        await self.store.set_dns_orphan(name, None, 0)
        return float("inf")

    async def forever(self) -> None:
        """Provision pending records, retrying failures with exponential backoff.

        Of replicas on one database, only the one holding the lead runs a pass; the others
        try to take it at each poll, so a replica that dies is replaced within a poll or two.
        """
        if not self.backend.provisions:
            return
        try:
            await self._forever()
        finally:
            await self.lead.release()

    async def _forever(self) -> None:
        while True:
            self._wake.clear()
            pause = DNS_POLL
            try:
                if not await self.lead.held():
                    await asyncio.sleep(pause)
                    continue
                now = self.clock()
                due = await self.store.dns_due(now, DNS_BATCH)
                orphans = await self.store.dns_orphans_due(now, DNS_BATCH)
                retries = await asyncio.gather(
                    *(self._attempt(w) for w in due),
                    *(self._orphan(n, a) for n, a in orphans),
                )
                if len(due) == DNS_BATCH or len(orphans) == DNS_BATCH:
                    continue
                # Sleep until the soonest retry when it comes before the next poll.
                pause = max(0.01, min([pause, *(t - self.clock() for t in retries)]))
            except Exception:
                log.exception("DNS reconciler pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)
