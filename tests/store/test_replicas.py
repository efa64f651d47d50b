"""Dashboard replicas: several real `vectis dashboard serve` processes on one PostgreSQL database.

They serve one fleet: a registration through any of them, a replay refused by all of them, a
session made on one and ended on another, and one periodic sweep split between them, with no
worker synced twice at once and the share of a replica killed mid-run taken over.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_abuse_workers import FakeWorker, good_answer
from tests.integration.test_dashboard_support import ADMIN, Dash, dashboard, dashboard_env
from tests.pg import PgServer
from tests.support import free_port, http, running
from vectis.crypto.secrets import key_from_secret
from vectis.crypto.signing import new_nonce, sign_request


@contextmanager
def replicas(tmp_path: Path, url: str, count: int, **env: str) -> Iterator[list[Dash]]:
    """`count` dashboards on the database at `url`, each with a data dir of its own."""
    with ExitStack() as stack:
        dashes = []
        for n in range(count):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            extra = {"VECTIS_DATABASE_URL": url, "VECTIS_REPLICA_NAME": f"r{n}", **env}
            proc = stack.enter_context(
                running(
                    ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)],
                    ready_url=base + "/healthz",
                    log=tmp_path / f"r{n}.log",
                    env=dashboard_env(tmp_path / f"r{n}-data", **extra),
                )
            )
            dashes.append(Dash(base, proc, tmp_path / f"r{n}-data"))
        yield dashes


def _signed_heartbeat(dash: Dash, worker_id: str, secret: str, port: int) -> tuple[bytes, str]:
    path = f"/infra/workers/{worker_id}/heartbeat"
    body = json.dumps({"port": port, "applied_revision": 0}).encode()
    auth = sign_request(key_from_secret(secret), worker_id, "POST", path, body,
                        ts=int(time.time()), nonce=new_nonce(os.urandom))  # fmt: skip
    return body, auth


def _post(dash: Dash, path: str, body: bytes, auth: str) -> int:
    status, _, _ = http("POST", dash.url + path, body, {"Authorization": auth})
    return status


def _at_once(calls: list[Any]) -> list[Any]:
    """Run the calls on threads released together; their results in order."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_replicas_share_registrations_nonces_and_sessions(
    tmp_path: Path, pg_server: PgServer
) -> None:
    with replicas(tmp_path, pg_server.create_database(), 2) as (a, b):
        # One secret registering through both replicas at the same moment: one worker.
        secret = secrets.token_hex(32)
        port = free_port()
        answers = _at_once([lambda d=d: d.register(secret, port) for d in (a, b) * 6])
        assert sorted(s for s, _ in answers) == [200] * 11 + [201], answers
        worker_id = answers[0][1]["id"]
        assert {doc["id"] for _, doc in answers} == {worker_id}
        status, listed = b.call("GET", "/infra/workers")
        assert status == 200 and [w["id"] for w in listed["workers"]] == [worker_id]
        # Its address is held across replicas too: another secret on it is refused.
        assert b.register(secrets.token_hex(32), port)[0] == 409
        assert a.register(secrets.token_hex(32), port)[0] == 409

        # A heartbeat through one replica, replayed to the other: refused there.
        path = f"/infra/workers/{worker_id}/heartbeat"
        body, auth = _signed_heartbeat(a, worker_id, secret, port)
        assert _post(a, path, body, auth) == 200
        assert _post(b, path, body, auth) == 401
        assert _post(a, path, body, auth) == 401
        # A fresh one through the other replica (which never saw the worker register) is fine.
        body, auth = _signed_heartbeat(b, worker_id, secret, port)
        assert _post(b, path, body, auth) == 200
        # The same replay sent to both at once: exactly one of them takes it.
        body, auth = _signed_heartbeat(a, worker_id, secret, port)
        raced = _at_once([lambda d=d: _post(d, path, body, auth) for d in (a, b)])
        assert sorted(raced) == [200, 401], raced
        # Each replica counts the heartbeats it answered: 3 in all, at least one each.
        answered = [_counted(d, r'vectis_heartbeats_total\{result="ok"\}') for d in (a, b)]
        assert sum(answered) == 3 and min(answered) >= 1, answered

        # A session made on one replica serves on the other; a logout on either ends it.
        conn = HTTPConnection("127.0.0.1", int(a.url.rsplit(":", 1)[1]), timeout=10)
        conn.request("POST", "/login", json.dumps({"token": ADMIN}),
                     {"Content-Type": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        csrf = json.loads(resp.read())["csrf"]
        conn.close()
        cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
        assert resp.status == 200 and cookie.startswith("vectis_session="), cookie
        with_cookie = {"Cookie": cookie}
        for dash in (a, b):
            status, doc = dash.call("GET", "/infra/workers", token=None, headers=with_cookie)
            assert status == 200, doc
            status, doc = dash.call("GET", "/session", token=None, headers=with_cookie)
            assert doc == {"authenticated": True, "csrf": csrf}
        # A change through the other replica needs the CSRF token made on the first.
        change = {"role": "edge"}
        status, _ = b.call("PUT", f"/infra/workers/{worker_id}/config", change, token=None,
                           headers=with_cookie)  # fmt: skip
        assert status == 403
        status, _ = b.call("PUT", f"/infra/workers/{worker_id}/config", change, token=None,
                           headers={**with_cookie, "X-Vectis-CSRF": csrf})  # fmt: skip
        assert status == 200
        status, _ = b.call("POST", "/logout", token=None,
                           headers={**with_cookie, "X-Vectis-CSRF": csrf})  # fmt: skip
        assert status == 200
        for dash in (a, b):
            status, _ = dash.call("GET", "/infra/workers", token=None, headers=with_cookie)
            assert status == 401


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_replay_spends_no_budget_and_a_call_over_budget_keeps_no_nonce(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """The nonce is checked and kept in one step (on replicas one statement), the budget
    taken before it: the outcomes stay those of the documented order (check, budget, keep),
    on one SQLite dashboard as on two replicas."""
    budget = {"VECTIS_WORKER_CALLS_PER_MINUTE": "10"}
    with ExitStack() as stack:
        if backend == "sqlite":
            a = b = stack.enter_context(dashboard(tmp_path, **budget))
        else:
            url = request.getfixturevalue("pg_server").create_database()
            a, b = stack.enter_context(replicas(tmp_path, url, 2, **budget))
        secret = secrets.token_hex(32)
        port = free_port()
        status, doc = a.register(secret, port)
        assert status == 201, doc
        worker_id = doc["id"]
        path = f"/infra/workers/{worker_id}/heartbeat"
        answered = _signed_heartbeat(a, worker_id, secret, port)
        assert _post(a, path, *answered) == 200
        for _ in range(8):  # 9 of the 10 calls a minute spent on a
            assert _post(a, path, *_signed_heartbeat(a, worker_id, secret, port)) == 200
        # Replays, however many, are refused as replays and spend nothing: the tenth call
        # is still there for a fresh heartbeat.
        for _ in range(5):
            assert _post(a, path, *answered) == 401
        assert _post(a, path, *_signed_heartbeat(a, worker_id, secret, port)) == 200
        # Over budget: a replay is still a replay (401), a fresh call a 429 whose nonce is
        # not kept: the same request is answered once the budget has room again.
        assert _post(a, path, *answered) == 401
        late = _signed_heartbeat(a, worker_id, secret, port)
        status, headers, _ = http("POST", a.url + path, late[0], {"Authorization": late[1]})
        assert status == 429
        time.sleep(int(headers["Retry-After"]) + 0.5)
        assert _post(a, path, *late) == 200
        assert _post(b, path, *late) == 401


class CountingWorker(FakeWorker):
    """A fake signed worker that notes when each sync came, and any two that overlapped."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.overlaps = 0
        self._busy = 0
        self._lock = threading.Lock()
        super().__init__(secrets.token_hex(32), self._answer)

    def _answer(self, worker_id: str) -> bytes:
        with self._lock:
            self._busy += 1
            self.overlaps += self._busy > 1
            self.times.append(time.monotonic())
        time.sleep(0.05)  # long enough that two syncs at once would meet here
        with self._lock:
            self._busy -= 1
        return good_answer(worker_id)


def _counted(dash: Dash, pattern: str) -> int:
    """The sum of the /metrics samples of this replica whose name and labels match."""
    status, _, raw = http(
        "GET", dash.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert status == 200
    text = raw.decode()
    assert re.search(r'vectis_dashboard_info\{replica="r\d"', text), text
    return sum(int(n) for n in re.findall(rf"^{pattern} (\d+)$", text, re.MULTILINE))


def _syncs_by_replica(dash: Dash) -> int:
    return _counted(dash, r"vectis_syncs_total\{[^}]*\}")


INTERVAL = 1.5


def test_the_sweep_is_split_between_replicas_and_survives_a_kill(
    tmp_path: Path, pg_server: PgServer
) -> None:
    workers = [CountingWorker() for _ in range(16)]
    try:
        env = {"VECTIS_SYNC_INTERVAL": str(INTERVAL), "VECTIS_SYNC_CONCURRENCY": "2"}
        with replicas(tmp_path, pg_server.create_database(), 3, **env) as dashes:
            for i, w in enumerate(workers):
                status, reg = dashes[i % 3].register(w.secret, w.port)
                assert status == 201, reg
                w.worker_id = reg["id"]
            time.sleep(4 * INTERVAL)
            # Every worker synced about once an interval, never twice at once or in one.
            for w in workers:
                gaps = [t1 - t0 for t0, t1 in zip(w.times, w.times[1:], strict=False)]
                assert len(w.times) >= 3, (w.worker_id, w.times)
                assert min(gaps) > 0.8 * INTERVAL, (w.worker_id, gaps)
                assert w.overlaps == 0
            # Each replica synced what it claimed: its /metrics show the split. Read after the
            # syncs, its claims may be ahead by what it claimed meanwhile (CLAIM_PER_TASK *
            # VECTIS_SYNC_CONCURRENCY = 4 at a time; two claims at most in that moment).
            shares = [_syncs_by_replica(d) for d in dashes]
            claimed = [_counted(d, "vectis_sweep_claimed_total") for d in dashes]
            assert sum(shares) > max(shares), shares  # more than one replica took part
            assert sum(shares) == sum(len(w.times) for w in workers), shares
            assert all(s <= c <= s + 8 for s, c in zip(shares, claimed, strict=True)), (
                claimed,
                shares,
            )

            # A replica killed mid-run: the others sync its share within two intervals.
            dashes[0].proc.stop(signal.SIGKILL)
            killed_at = time.monotonic()
            time.sleep(2 * INTERVAL + 0.5)
            for w in workers:
                after = [t for t in w.times if t > killed_at]
                assert after and after[0] - killed_at <= 2 * INTERVAL, (w.worker_id, after)
                gaps = [t1 - t0 for t0, t1 in zip(w.times, w.times[1:], strict=False)]
                assert min(gaps) > 0.8 * INTERVAL and w.overlaps == 0, (w.worker_id, gaps)
    finally:
        for w in workers:
            w.close()
