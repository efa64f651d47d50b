"""The rows a dashboard keeps for heartbeats, on SQLite and on PostgreSQL: writes made behind
its back (another replica, a command, the database's own client) reach a heartbeat's answer
within `worker_cache.BOUND`, while heartbeats that change nothing read no row."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.store.conftest import Backend
from tests.support import heartbeat_in_process as beat
from tests.support import in_process_env
from vectis.crypto.secrets import generate_secret
from vectis.dashboard import worker_cache
from vectis.dashboard.core import Dashboard
from vectis.dashboard.settings import load_settings
from vectis.errors import Unauthorized

TOKEN = "enroll-" + "9a8b7c6d5e" * 3


async def test_writes_behind_a_dashboards_back_reach_heartbeats_within_the_bound(
    backend: Backend, tmp_path: Path
) -> None:
    env = in_process_env(tmp_path, TOKEN, VECTIS_WORKER_CALLS_PER_MINUTE="100000")
    store = backend.make()
    reads = [0]
    get_worker = store.get_worker

    async def counted(worker_id: str) -> Any:
        reads[0] += 1
        return await get_worker(worker_id)

    store.get_worker = counted  # type: ignore[method-assign]
    dash = Dashboard(load_settings(env, zone="fleet.test", dns_backend="none"), store=store)
    other = backend.make()  # another replica, or a command run on the same data
    await dash.start()
    await other.open()
    try:
        secret = generate_secret()
        body = json.dumps({"ip": "127.0.0.1", "port": 3000, "secret": secret})
        answer, _ = await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", body.encode())
        wid = answer["id"]
        await beat(dash, wid, secret)
        # Until a check that started after that heartbeat's write has ended: on PostgreSQL it
        # hears the write's own notification and drops the row, which the next one reads.
        rows, written = dash.worker_calls.rows, dash.worker_calls.rows.clock()
        deadline = time.monotonic() + 5
        while not (rows.fresh() and rows._checked_at > written):
            assert time.monotonic() < deadline, "the rows never became fresh"
            await asyncio.sleep(0.02)
        await beat(dash, wid, secret)

        # Heartbeats that change nothing, a grouped last-seen write among them: no row read.
        before = reads[0]
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            assert (await beat(dash, wid, secret))["revision"] == 0
            await asyncio.sleep(0.02)
        assert reads[0] == before, "a heartbeat that changed nothing read the store"

        # A write by the database's own client, and one by another store on the same data.
        backend.execute(
            "UPDATE workers SET desired_revision = 9, config_json = '{\"k\":1}' "
            f"WHERE id = '{wid}'"
        )
        await asyncio.sleep(worker_cache.BOUND + 0.05)
        answer = await beat(dash, wid, secret)
        assert answer["revision"] == 9 and answer["config"] == {"k": 1}

        if backend.name == "postgresql":
            new = generate_secret()
            assert await other.rotate_secret(wid, secret, new, dash.now()) is not None
            await asyncio.sleep(worker_cache.BOUND + 0.05)
            with pytest.raises(Unauthorized):
                await beat(dash, wid, secret)  # the retired secret, held by this replica
            assert (await beat(dash, wid, new))["revision"] == 9
            secret = new

        assert await other.delete_worker(wid) is not None
        await asyncio.sleep(worker_cache.BOUND + 0.05)
        with pytest.raises(Unauthorized):
            await beat(dash, wid, secret)
    finally:
        await other.close()
        await dash.stop()
