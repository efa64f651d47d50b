"""Syncs the dashboard starts: one worker on demand, the whole fleet on demand and periodically.

The signed exchanges themselves, and the pool a sweep runs them on, are `syncer.Syncer`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from vectis.dashboard import schemas
from vectis.dashboard.admin import Admin
from vectis.dashboard.keyring import KeyRing, WithCurrentSecrets
from vectis.dashboard.model import Worker
from vectis.dashboard.replicas import SweepClaims
from vectis.dashboard.store import Store
from vectis.dashboard.syncer import SweepCounts, Syncer
from vectis.errors import NotFound
from vectis.status import iso

log = logging.getLogger("vectis.dashboard")


JOBS_KEPT = 20
#: Workers one replica claims at a time, per unit of sync concurrency: enough to keep its pool
#: busy, few enough that replicas claiming side by side split a fleet between them.
CLAIM_PER_TASK = 2
#: The longest a replica waits before it looks for due workers again (and the shortest).
CLAIM_POLL = (0.05, 5.0)
#: Claimed batches a replica syncs at once: the next is claimed and under way while the last
#: exchanges of the previous one finish and its outcomes are stored.
CLAIMS_IN_FLIGHT = 2


class Job:
    """A sweep of the whole fleet started by `POST /infra/workers/sync?background=true`."""

    def __init__(self, total: int, now: datetime) -> None:
        self.id = secrets.token_hex(6)
        self.state = "running"
        self.total = total
        self.done = 0
        self.counts = {"synced": 0, "failed": 0, "outdated": 0}
        self.started_at = iso(now)
        self.finished_at: str | None = None
        self.error: str | None = None

    def stored(self, batch: list[Worker]) -> None:
        self.done += len(batch)
        for w in batch:
            if w.status in self.counts:
                self.counts[w.status] += 1

    def finish(self, now: datetime, counts: SweepCounts | None, error: str | None) -> None:
        self.state = "done" if error is None else "failed"
        if counts is not None:
            self.done = counts.total
            self.counts = {
                "synced": counts.synced,
                "failed": counts.failed,
                "outdated": counts.outdated,
            }
        self.finished_at = iso(now)
        self.error = error

    def model(self) -> schemas.SweepJob:
        return schemas.SweepJob(
            id=self.id,
            state=self.state,
            total=self.total,
            done=self.done,
            synced=self.counts["synced"],
            failed=self.counts["failed"],
            outdated=self.counts["outdated"],
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
        )


class Sweeps:
    """`POST /infra/workers/<id>/sync`, `POST /infra/workers/sync` and the periodic sweep."""

    def __init__(
        self,
        store: Store,
        syncer: Syncer,
        keys: KeyRing,
        admin: Admin,
        interval: float,
        claims: SweepClaims | None = None,
    ) -> None:
        self.store = store
        #: None: this dashboard alone sweeps the fleet; else replicas claim workers in turn
        self.claims = claims
        self.syncer = syncer
        self.keys = keys
        self.admin = admin
        self.interval = interval
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: tuple[Job, asyncio.Task[None]] | None = None

    async def sync_worker(self, worker_id: str) -> dict[str, Any]:
        stored = await self.admin.worker(worker_id)
        self._learn_keys([stored])
        w = await self.syncer.sync_one(self.keys.current(stored))
        if w is None:
            raise NotFound(f"worker {worker_id[:64]!r} was deleted during the sync")
        return self.admin.render(w)

    async def sync_all(self, job: Job | None = None) -> SweepCounts:
        started = time.perf_counter()
        listed = await self.store.list_workers()
        self._learn_keys(listed)
        workers = WithCurrentSecrets(listed, self.keys)
        if job is not None:
            job.total = len(workers)
        counts = await self.syncer.sweep(workers, job.stored if job is not None else None)
        log.info(
            "synced %d workers in %.2f s: %d synced, %d outdated, %d failed",
            counts.total,
            time.perf_counter() - started,
            counts.synced,
            counts.outdated,
            counts.failed,
        )
        return counts

    async def start_job(self) -> Job:
        """A background sweep of the whole fleet: the one running already, or a new one."""
        if self._running is not None:
            return self._running[0]
        job = Job(0, self.admin.now())
        task = asyncio.create_task(self._run(job), name=f"vectis-job-{job.id}")
        self._running = (job, task)
        self._jobs[job.id] = job
        while len(self._jobs) > JOBS_KEPT:
            self._jobs.popitem(last=False)
        return job

    async def _run(self, job: Job) -> None:
        try:
            counts = await self.sync_all(job)
        except Exception:
            log.exception("background sweep %s failed", job.id)
            job.finish(self.admin.now(), None, "the sweep failed; see the dashboard's log")
        else:
            job.finish(self.admin.now(), counts, None)
        finally:
            self._running = None

    def job(self, job_id: str) -> Job:
        found = self._jobs.get(job_id)
        if found is None:
            raise NotFound(f"no job {job_id[:64]!r}")
        return found

    async def close(self) -> None:
        """Stop a background sweep that still runs."""
        if self._running is not None:
            task = self._running[1]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def forever(self) -> None:
        """Sync every worker each `interval` seconds (the first sweep after one interval).

        Sweeps start on a fixed cadence, not an interval after the previous one ended: a
        sweep of a large fleet takes a good part of the interval, and waiting a whole
        interval after it would sync each worker less often than once an interval. A sweep
        that overruns its interval is followed at once by the next.
        """
        if self.claims is not None:
            await self._shared_forever(self.claims)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + self.interval, loop.time())
            try:
                await self.sync_all()
            except Exception:
                log.exception("periodic sync sweep failed")

    def _learn_keys(self, workers: list[Worker]) -> None:
        """Replicas: records just read hold the secrets other replicas registered or rotated,
        which the key ring of this one may not know yet."""
        if self.claims is None:
            return
        for w in workers:
            held = self.keys.get(w.id)
            if held is None or held.hex() != w.secret:
                self.keys.set(w.id, w.secret)
            self.keys.follow_pins(w)

    async def _shared_forever(self, claims: SweepClaims) -> None:
        """Replicas on one database: sync the workers this replica claims as they fall due.

        A claim makes each worker due again one interval later, whoever synced it; so every
        worker is synced once an interval by one replica, and those of a replica that died
        fall to the others when they are due again. Up to CLAIMS_IN_FLIGHT claimed batches are
        synced at once, so that the pool keeps working while a batch's last exchanges finish
        and its outcomes are stored: one batch at a time left it idle for much of each.
        """
        chunk = CLAIM_PER_TASK * self.syncer.concurrency
        low, high = CLAIM_POLL
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if len(running) >= CLAIMS_IN_FLIGHT:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                pause = min(high, self.interval)
                try:
                    batch = await claims.claim(self.interval, chunk)
                    self.syncer.metrics.sweep_claimed += len(batch)
                    self._learn_keys(batch)
                    if batch:
                        task = asyncio.create_task(self._sync_claimed(batch))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        continue
                    due = await claims.next_due()
                    if due is not None:
                        pause = max(low, min(pause, due))
                except Exception:
                    log.exception("periodic sync sweep failed")
                await asyncio.sleep(pause)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _sync_claimed(self, batch: list[Worker]) -> None:
        try:
            counts = await self.syncer.sweep(WithCurrentSecrets(batch, self.keys))
        except Exception:
            log.exception("periodic sync sweep failed")
        else:
            log.debug("synced %d claimed workers: %d failed", counts.total, counts.failed)
