"""DNS never fails registration: a provider outage leaves records pending, retried until done.

Runs the real Dashboard core in this process (real SQLite, the in-memory DNS provider), so
the test can switch the provider off and on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from tests.support import in_process_env
from vectis.dashboard.core import Dashboard
from vectis.dashboard.dns.memory import MemoryBackend
from vectis.dashboard.settings import load_settings

TOKEN = "enroll-0123456789abcdef0123456789"


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_outage_then_recovery(tmp_path: Path) -> None:
    env = in_process_env(tmp_path, TOKEN)
    settings = load_settings(env, zone="fleet.test", dns_backend="memory")
    settings.dns_retry_max = 0.1
    dns = MemoryBackend("fleet.test")
    dash = Dashboard(settings, dns=dns)
    await dash.start()
    task = asyncio.create_task(dash.dns.forever())
    try:
        dns.down = True
        body = b'{"ip": "10.9.0.1", "secret": "%s"}' % os.urandom(32).hex().encode()
        answer, created = await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", body)
        assert created and answer["subdomain"].endswith(".fleet.test")
        wid, name = answer["id"], answer["subdomain"]

        async def failing() -> bool:
            doc = await dash.admin.show_worker(wid)
            return doc["dns_status"] == "failed" and dns.calls >= 3

        await wait_for(failing)
        assert "down" in (await dash.admin.show_worker(wid))["dns_error"]
        dns.down = False

        async def synced() -> bool:
            return (await dash.admin.show_worker(wid))["dns_status"] == "synced"

        await wait_for(synced)
        assert await dns.lookup(name) == ["10.9.0.1"]

        # Re-registering from a new address moves the record.
        moved = body.replace(b"10.9.0.1", b"10.9.0.2")
        assert (await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", moved))[1] is False

        async def moved_record() -> bool:
            return await dns.lookup(name) == ["10.9.0.2"]

        await wait_for(moved_record)

        # Deleting during an outage: the worker goes at once, its record as soon as DNS is back.
        dns.down = True
        assert (await dash.admin.delete_worker(wid))["deleted"]
        dns.down = False
        dns.records[(name, "A")] = "10.9.0.2"  # the outage left it behind

        async def gone() -> bool:
            return (name, "A") not in dns.records

        await wait_for(gone)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await dash.stop()
