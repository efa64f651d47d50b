"""Heartbeats that change nothing are answered from the rows the dashboard holds, and those rows
stay true: every write of this process reaches them at once, another process's within
`worker_cache.BOUND`. In-process, on a real SQLite store (a second connection to the same file
is the other process)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support import heartbeat_in_process, in_process_env
from vectis.crypto.secrets import generate_secret
from vectis.dashboard import worker_cache
from vectis.dashboard.core import Dashboard
from vectis.dashboard.model import Worker
from vectis.dashboard.settings import load_settings
from vectis.dashboard.sqlite_store import SQLiteStore
from vectis.dashboard.worker_cache import WorkerCache
from vectis.errors import Unauthorized

TOKEN = "enroll-" + "f0e1d2c3b4" * 3
#: Every heartbeat here reports the version its worker registered with.
_beat = partial(heartbeat_in_process, version="1")


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the rows it reads for heartbeats; and a write method
    of its own, as a store grows new ones, that reports nothing by hand."""

    reads = 0

    async def get_worker(self, worker_id: str) -> Worker | None:
        self.reads += 1
        return await super().get_worker(worker_id)

    async def retire_everyone(self) -> None:
        def q() -> None:
            with self._tx() as db:
                db.execute("UPDATE workers SET status = 'failed'")
                self._touch([], everything=True)

        await self._run(q)


async def _fleet(tmp_path: Path, count: int) -> tuple[Dashboard, CountingStore, list[str], str]:
    env = in_process_env(tmp_path, TOKEN, VECTIS_WORKER_CALLS_PER_MINUTE="100000")
    settings = load_settings(env, zone="fleet.test", dns_backend="none")
    store = CountingStore(settings.db_path)
    dash = Dashboard(settings, store=store)
    await dash.start()
    secret = generate_secret()
    ids = []
    for n in range(count):
        sec = secret if n == 0 else generate_secret()
        body = json.dumps({"ip": "127.0.0.1", "port": 3000 + n, "secret": sec, "version": "1"})
        answer, _ = await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", body.encode())
        ids.append(answer["id"])
    return dash, store, ids, secret


async def _until_fresh(dash: Dashboard) -> None:
    deadline = time.monotonic() + 5
    while not dash.worker_calls.rows.fresh():
        assert time.monotonic() < deadline, "the rows never became fresh"
        await asyncio.sleep(0.02)


async def test_heartbeats_that_change_nothing_read_no_row(tmp_path: Path) -> None:
    dash, store, ids, secret = await _fleet(tmp_path, 1)
    wid = ids[0]
    try:
        assert (await _beat(dash, wid, secret))["status"] == "synced"  # written: pending -> synced
        await _until_fresh(dash)
        await _beat(dash, wid, secret)
        before = store.reads
        for _ in range(50):
            assert (await _beat(dash, wid, secret))["status"] == "synced"
        assert store.reads == before, "a heartbeat that changes nothing read the store"
        # ... and their last-seen times are still written, once a second.
        stored = await store.get_worker(wid)
        assert stored is not None
        deadline = time.monotonic() + 3
        while (now := await store.get_worker(wid)) and now.last_sync == stored.last_sync:
            assert time.monotonic() < deadline, "the last-seen time was never written"
            await asyncio.sleep(0.05)
            await _beat(dash, wid, secret)
    finally:
        await dash.stop()


async def test_this_process_writes_reach_the_next_heartbeat(tmp_path: Path) -> None:
    dash, store, ids, secret = await _fleet(tmp_path, 2)
    wid = ids[0]
    try:
        await _beat(dash, wid, secret)
        await _until_fresh(dash)
        assert (await _beat(dash, wid, secret))["revision"] == 0
        await dash.admin.set_config(wid, b'{"greeting": "hello"}')
        answer = await _beat(dash, wid, secret)
        assert answer["revision"] == 1 and answer["config"] == {"greeting": "hello"}
        # A write method the store grew later, that names no worker: every row is dropped.
        await _beat(dash, wid, secret)
        await store.retire_everyone()
        assert dash.worker_calls.rows.get(wid) is None
        before = store.reads
        assert (await _beat(dash, wid, secret))["status"] == "outdated"  # was failed: stored
        assert store.reads == before + 1
    finally:
        await dash.stop()


async def test_another_process_writes_are_seen_within_the_bound(tmp_path: Path) -> None:
    dash, store, ids, secret = await _fleet(tmp_path, 1)
    wid = ids[0]
    other = SQLiteStore(store.path)  # what a CLI command run on the same file would write
    await other.open()
    try:
        await _beat(dash, wid, secret)
        await _until_fresh(dash)
        assert (await _beat(dash, wid, secret))["revision"] == 0

        def bump(w: Worker) -> Any:
            return replace(w, desired_revision=7, config_json='{"from":"elsewhere"}'), []

        assert await other.update_workers([wid], bump, dash.now())
        await asyncio.sleep(worker_cache.BOUND + 0.05)
        answer = await _beat(dash, wid, secret)
        assert answer["revision"] == 7 and answer["config"] == {"from": "elsewhere"}

        assert await other.delete_worker(wid) is not None
        await asyncio.sleep(worker_cache.BOUND + 0.05)
        with pytest.raises(Unauthorized):
            await _beat(dash, wid, secret)
    finally:
        await other.close()
        await dash.stop()


def _row(worker_id: str, revision: int) -> Any:
    return Worker(
        id=worker_id,
        subdomain=f"{worker_id}.fleet.test",
        ip="127.0.0.1",
        port=3000,
        secret="ab" * 32,
        hostname=None,
        version="1",
        status="synced",
        last_sync=None,
        last_error=None,
        consecutive_failures=0,
        dns_status="none",
        dns_error=None,
        dns_attempts=0,
        dns_next_at=0.0,
        desired_revision=revision,
        config_json="{}",
        applied_revision=0,
        stats_json=None,
        metadata_json=None,
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
    )


def test_a_read_that_raced_a_write_is_not_kept() -> None:
    clock = [100.0]
    rows = WorkerCache(lambda: clock[0])
    rows._checked_at = clock[0]  # as if the check for other writers had just run
    old, new = _row("brave-otter-3f2a", 1), _row("brave-otter-3f2a", 2)
    # Read before a write that lands before the read's row is kept: dropped, read again.
    stamp = rows.stamp()
    rows.wrote((), [old.id], rows.stamp())
    assert rows.put(old, stamp) is None and rows.get(old.id) is None
    # Two writes of one row returning out of order: the row is read again, never the older.
    first, second = rows.stamp(), rows.stamp()
    rows.wrote([new], (), second)
    rows.wrote([old], (), first)
    assert rows.get(old.id) is None
    # A row read after the last write is kept, and answers until the check is BOUND old.
    assert rows.put(new, rows.stamp()) is not None
    entry = rows.get(new.id)
    assert entry is not None and entry.row.desired_revision == 2
    clock[0] += worker_cache.BOUND + 0.01
    assert rows.get(new.id) is None


def test_rows_are_kept_for_heartbeats_only_and_drops_are_forgotten() -> None:
    clock = [100.0]
    rows = WorkerCache(lambda: clock[0])
    rows._checked_at = clock[0]
    fleet = [_row(f"calm-heron-{n:04x}", 0) for n in range(1000)]
    # A sweep writes every worker: no row is kept for those no heartbeat asked for ...
    stamp = rows.stamp()  # a heartbeat's read, begun before the sweep's write
    rows.wrote(fleet, (), rows.stamp())
    assert len(rows) == 0
    # ... and once their drops are forgotten, a read begun before them is still refused.
    rows.prune()
    rows.prune()
    assert len(rows._entries) == 0
    assert rows.put(fleet[0], stamp) is None
    kept = rows.put(fleet[0], rows.stamp())
    assert kept is not None and rows.get(fleet[0].id) is kept
    # A row written again with nothing new but the last-seen time is kept as it was, with
    # what it answered (no new objects for the collector); a read begun before that write
    # is still refused.
    kept.quiet = b"{}"
    before = rows.stamp()
    rows.wrote([replace(fleet[0], last_sync="2026-01-01T00:00:09Z")], (), rows.stamp())
    again = rows.get(fleet[0].id)
    assert again is kept and again.quiet == b"{}" and again.row == fleet[0]
    assert rows.put(replace(fleet[0], last_sync="2026-01-01T00:00:08Z"), before) is None
    rows.wrote([replace(fleet[0], desired_revision=5)], (), rows.stamp())
    changed = rows.get(fleet[0].id)
    assert changed is not None and changed.quiet is None and changed.row.desired_revision == 5
