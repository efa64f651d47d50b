"""Syncs the dashboard starts: one worker on demand, the whole fleet on demand and periodically.

The signed exchanges themselves, and the pool a sweep runs them on, are `syncer.Syncer`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from vectis.dashboard.admin import Admin
from vectis.dashboard.keyring import KeyRing, WithCurrentSecrets
from vectis.dashboard.store import Store
from vectis.dashboard.syncer import SweepCounts, Syncer
from vectis.errors import NotFound

log = logging.getLogger("vectis.dashboard")


class Sweeps:
    """`POST /infra/workers/<id>/sync`, `POST /infra/workers/sync` and the periodic sweep."""

    def __init__(
        self, store: Store, syncer: Syncer, keys: KeyRing, admin: Admin, interval: float
    ) -> None:
        self.store = store
        self.syncer = syncer
        self.keys = keys
        self.admin = admin
        self.interval = interval

    async def sync_worker(self, worker_id: str) -> dict[str, Any]:
        stored = await self.admin.worker(worker_id)
        w = await self.syncer.sync_one(self.keys.current(stored))
        if w is None:
            raise NotFound(f"worker {worker_id[:64]!r} was deleted during the sync")
        return self.admin.render(w)

    async def sync_all(self) -> SweepCounts:
        started = time.perf_counter()
        workers = WithCurrentSecrets(await self.store.list_workers(), self.keys)
        counts = await self.syncer.sweep(workers)
        log.info(
            "synced %d workers in %.2f s: %d synced, %d outdated, %d failed",
            counts.total,
            time.perf_counter() - started,
            counts.synced,
            counts.outdated,
            counts.failed,
        )
        return counts

    async def forever(self) -> None:
        """Sync every worker each `interval` seconds (the first sweep after one interval)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync_all()
            except Exception:
                log.exception("periodic sync sweep failed")
