"""Heartbeats that change nothing cost no write of their own: the times workers were last
seen are written together, once a second and at shutdown, while anything else a heartbeat
changes is written before its answer. In-process, on a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.support import heartbeat_in_process as beat
from tests.support import in_process_env
from vectis.crypto.secrets import generate_secret
from vectis.dashboard.core import Dashboard
from vectis.dashboard.settings import load_settings
from vectis.dashboard.sqlite_store import SQLiteStore

TOKEN = "enroll-" + "a1b2c3d4e5" * 3


class CountingStore(SQLiteStore):
    """The real SQLite store, counting its worker writes."""

    writes = 0

    async def update_workers(self, ids: Any, mutate: Any, now: Any) -> Any:
        self.writes += 1
        return await super().update_workers(ids, mutate, now)


async def test_heartbeats_that_change_nothing_are_written_together(tmp_path: Path) -> None:
    env = in_process_env(tmp_path, TOKEN, VECTIS_WORKER_CALLS_PER_MINUTE="100000")
    settings = load_settings(env, zone="fleet.test", dns_backend="none")
    store = CountingStore(settings.db_path)
    dash = Dashboard(settings, store=store)
    await dash.start()
    try:
        secret = generate_secret()
        body = json.dumps({"ip": "127.0.0.1", "port": 3000, "secret": secret, "version": "1"})
        answer, _ = await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", body.encode())
        wid = answer["id"]
        # The first heartbeat changes the status (pending -> synced): written before its answer.
        before = store.writes
        assert (await beat(dash, wid, secret, version="1"))["status"] == "synced"
        assert store.writes == before + 1
        first = await store.get_worker(wid)
        assert first is not None and first.status == "synced" and first.last_sync

        # 200 that change nothing: no write of their own, one grouped write a second.
        await asyncio.sleep(1.05)  # a later second than the first beat's
        before = store.writes
        started = time.monotonic()
        for _ in range(200):
            assert (await beat(dash, wid, secret, version="1"))["status"] == "synced"
        took = time.monotonic() - started
        assert store.writes - before <= 1 + int(took / 1.0) + 1, (store.writes - before, took)
        # ... and the last-seen time is stored within a second or so.
        deadline = time.monotonic() + 3
        while True:
            stored = await store.get_worker(wid)
            assert stored is not None
            if stored.last_sync > first.last_sync:
                break
            assert time.monotonic() < deadline, "the last-seen time was never written"
            await asyncio.sleep(0.05)

        # A heartbeat that changes something (a new version) is written before its answer.
        before = store.writes
        await beat(dash, wid, secret, version="2")
        assert store.writes == before + 1
        changed = await store.get_worker(wid)
        assert changed is not None and changed.version == "2"

        # Gathered times still unwritten at shutdown are written then.
        await asyncio.sleep(1.05)
        await beat(dash, wid, secret, version="2")
        seen_at = dash.worker_calls._seen[wid]
    finally:
        await dash.stop()
    reopened = SQLiteStore(settings.db_path)
    await reopened.open()
    try:
        final = await reopened.get_worker(wid)
        assert final is not None and final.last_sync == seen_at
    finally:
        await reopened.close()
