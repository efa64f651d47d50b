"""Syncs on two threads (VECTIS_SYNC_THREADS=2), in-process against loopback TLS workers: each
worker is synced once a sweep, always on the same thread, whose kept connection carries its
next sync; a key other than the pinned one still fails its worker alone. And a sweep's
outcomes reach the store one batch at a time, however fast the syncs."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import in_process_env
from vectis.crypto.secrets import generate_secret, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, parse_authorization, sign_response
from vectis.dashboard.core import Dashboard
from vectis.dashboard.settings import load_settings
from vectis.worker import tls as worker_tls

TOKEN = "enroll-" + "a1b2c3d4e5" * 3
WORKERS = 24


class TlsWorker:
    """A loopback TLS /sync endpoint answering signed, keeping connections open; it counts
    the requests and connections it served."""

    def __init__(self, secret: str, context: ssl.SSLContext) -> None:
        self.secret = secret
        self.key = key_from_secret(secret)
        self.context = context
        self.requests = 0
        self.connections = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = dict(line.split(": ", 1) for line in lines if line)
                await reader.readexactly(int(headers["Content-Length"]))
                req = parse_authorization(headers["Authorization"])
                self.requests += 1
                body = json.dumps({"worker_id": req.worker_id, "applied_revision": 0}).encode()
                sig = sign_response(
                    self.key, req.worker_id, req.nonce, 200, body, ts=int(time.time())
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"{SIGNATURE_HEADER}: {sig}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_two_sync_threads_sync_each_worker_once_a_sweep_on_its_own_thread(
    tmp_path: Path,
) -> None:
    pem = tmp_path / "worker.tls.pem"
    worker_tls.create_tls_file(pem)
    pin = worker_tls.read_pin(pem)
    other = tmp_path / "other.tls.pem"  # an impostor's key on the last worker's port
    worker_tls.create_tls_file(other)
    assert pin is not None and worker_tls.read_pin(other) != pin
    workers = [
        TlsWorker(generate_secret(), worker_tls.server_context(other if n == WORKERS - 1 else pem))
        for n in range(WORKERS)
    ]
    for w in workers:
        await w.start()
    env = in_process_env(tmp_path, TOKEN, VECTIS_SYNC_THREADS="2", VECTIS_SYNC_KEEPALIVE="60")
    dash = Dashboard(load_settings(env, zone="fleet.test", dns_backend="none"))
    await dash.start()
    try:
        lanes = dash.syncer.lanes
        assert len(lanes) == 2
        names = {t.name for t in threading.enumerate()}
        assert {"vectis-sync-1", "vectis-sync-2"} <= names, names
        # Each worker registered with its own secret and the pin of the key they share.
        ids = []
        for w in workers:
            raw = json.dumps(
                {"ip": "127.0.0.1", "port": w.port, "secret": w.secret, "tls_pin": pin}
            ).encode()
            answer, _ = await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", raw)
            ids.append(answer["id"])
        stored = [await dash.store.get_worker(i) for i in ids]
        home = Counter(dash.syncer.lane_index(w) for w in stored if w is not None)
        assert set(home) == {0, 1}, home  # both threads have workers to sync

        for sweep in (1, 2):
            counts = await asyncio.wait_for(dash.sweeps.sync_all(), 30)
            assert (counts.total, counts.synced, counts.failed) == (WORKERS, WORKERS - 1, 1)
            # Each worker once a sweep, never twice, whichever thread it went to.
            assert [w.requests for w in workers[:-1]] == [sweep] * (WORKERS - 1)
            assert sum(lane.exchanges for lane in lanes) == sweep * WORKERS
            assert [lane.exchanges for lane in lanes] == [sweep * home[0], sweep * home[1]]
        # The second sweep went over the connections the first kept: the same thread both times.
        assert [w.connections for w in workers[:-1]] == [1] * (WORKERS - 1)
        impostor = await dash.store.get_worker(ids[-1])
        assert impostor is not None and impostor.status == "failed"
        assert impostor.last_error is not None
        assert impostor.last_error.startswith("identity mismatch:"), impostor.last_error
        assert "did not prove the pinned TLS key" in impostor.last_error
        assert workers[-1].requests == 0  # no request is sent to a key that is not pinned
    finally:
        await dash.stop()
        for w in workers:
            await w.stop()


def test_the_sync_threads_setting_and_its_bounds(tmp_path: Path) -> None:
    from vectis.dashboard import sync_http
    from vectis.dashboard.metrics import Metrics
    from vectis.dashboard.syncer import Syncer
    from vectis.errors import ConfigError

    env = {"VECTIS_DATA_DIR": str(tmp_path)}
    assert load_settings(env).sync_threads == 1
    assert load_settings({**env, "VECTIS_SYNC_THREADS": "2"}).sync_threads == 2
    for bad in ("0", "17", "two"):
        with pytest.raises(ConfigError, match="VECTIS_SYNC_THREADS"):
            load_settings({**env, "VECTIS_SYNC_THREADS": bad})

    def syncer(threads: int, concurrency: int, keep_max: int = 10) -> Syncer:
        store: Any = None  # never reached: no sync runs
        return Syncer(
            store,
            Metrics(),
            timeout=1,
            concurrency=concurrency,
            threads=threads,
            keep_max=keep_max,
        )

    def worker(n: int, pin: str | None) -> Any:
        return SimpleNamespace(id=f"w{n:04d}", tls_pin=pin)  # what the thread is chosen by

    # Never more threads than syncs at once.
    assert len(syncer(4, 2).lanes) == 2
    one = syncer(1, 100)
    assert {one.lane_index(worker(n, "p")) for n in range(50)} == {0}
    # A TLS worker's thread depends on its id alone; a plain worker's is the first.
    three = syncer(3, 100)
    tls = [worker(n, "p" * 64) for n in range(300)]
    plain = [worker(n, None) for n in range(300, 400)]
    homes = [three.lane_index(w) for w in tls]
    assert homes == [syncer(3, 7).lane_index(w) for w in tls]
    assert set(homes) == {0, 1, 2}
    assert {three.lane_index(w) for w in plain} == {0}
    # The sweep's syncs at once are split in proportion to each thread's workers.
    sizes = three._pool_sizes(tls + plain)
    counts = [homes.count(k) + (100 if k == 0 else 0) for k in range(3)]
    assert sizes == [100 * c // 400 for c in counts], (sizes, counts)
    assert 97 <= sum(sizes) <= 100
    assert three._pool_sizes(plain) == [100, 1, 1]  # all of it where the plain workers go
    assert three._pool_sizes([]) == [1, 1, 1]
    # The kept connections' bound is the dashboard's: each pool counts the others'.
    pools = [lane.connections for lane in three.lanes]
    assert all(p.capacity == sync_http.fd_share(10) for p in pools)
    assert all(set(p.siblings) == set(pools) - {p} for p in pools)


async def test_pools_of_two_loops_keep_at_most_their_shared_capacity() -> None:
    from tests.unit.test_sync_http import KeepAliveServer, kept_call, until
    from vectis.dashboard import sync_http

    a = sync_http.Connections(capacity=2, idle=30)
    b = sync_http.Connections(capacity=2, idle=30)
    a.siblings, b.siblings = (b,), (a,)
    s0, s1, s2 = KeepAliveServer(), KeepAliveServer(), KeepAliveServer()
    async with s0.running(), s1.running(), s2.running():
        await kept_call(s0.port, a)
        await kept_call(s1.port, a)
        assert (len(a), len(b)) == (2, 0)
        # Full, and none of them b's to close: b does not keep its connection.
        await kept_call(s2.port, b)
        await until(lambda: s2.open == 0)
        assert (len(a), len(b), s0.open, s1.open) == (2, 0, 1, 1)
        a.close()
        await until(lambda: s0.open == 0 and s1.open == 0)
        await kept_call(s2.port, b)
        await kept_call(s0.port, a)
        assert (len(a), len(b)) == (1, 1)
        # Full again: a closes its own oldest for the new one, b's stays.
        await kept_call(s1.port, a)
        await until(lambda: s0.open == 0)
        assert (len(a), len(b), s1.open, s2.open) == (1, 1, 1, 1)
        a.close()
        b.close()


async def test_a_sweep_hands_the_store_one_batch_of_outcomes_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However fast the syncs come back, a sweep gives the store its next batch only once the
    last one is written: a heartbeat's or a request's own write waits for one batch at most,
    never for a queue of them (the final batch may overlap the one before it)."""
    from vectis.dashboard import syncer as syncer_module

    monkeypatch.setattr(syncer_module, "FLUSH_EVERY", 3)
    pem = tmp_path / "worker.tls.pem"
    worker_tls.create_tls_file(pem)
    pin = worker_tls.read_pin(pem)
    workers = [TlsWorker(generate_secret(), worker_tls.server_context(pem)) for _ in range(40)]
    for w in workers:
        await w.start()
    # One sync at a time: the outcomes come back a few at a time, each few a batch to store.
    env = in_process_env(tmp_path, TOKEN, VECTIS_SYNC_CONCURRENCY="1")
    dash = Dashboard(load_settings(env, zone="fleet.test", dns_backend="none"))
    await dash.start()
    try:
        for w in workers:
            raw = json.dumps(
                {"ip": "127.0.0.1", "port": w.port, "secret": w.secret, "tls_pin": pin}
            ).encode()
            await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", raw)
        record = dash.syncer._record
        writing = peak = 0
        sizes: list[int] = []

        async def slow_record(outcomes: dict[str, Any]) -> Any:
            nonlocal writing, peak
            writing += 1
            peak = max(peak, writing)
            sizes.append(len(outcomes))
            try:
                await asyncio.sleep(0.05)  # a busy store
                return await record(outcomes)
            finally:
                writing -= 1

        monkeypatch.setattr(dash.syncer, "_record", slow_record)
        counts = await asyncio.wait_for(dash.sweeps.sync_all(), 30)
        assert (counts.total, counts.synced, counts.failed) == (40, 40, 0)
        assert sum(sizes) == 40 and len(sizes) >= 2, sizes
        assert peak <= 2, f"{peak} batches were written at once"
    finally:
        await dash.stop()
        for w in workers:
            await w.stop()
