"""SIGKILL of the dashboard in the middle of a burst of registrations loses no acknowledged one."""

from __future__ import annotations

import http.client
import itertools
import json
import secrets
import signal
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.test_dashboard_support import Dash, dashboard

ROUNDS = 3
THREADS = 12


@dataclass
class Burst:
    """Registrations sent during one dashboard's life, and what was acknowledged."""

    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # secret -> (id, port)
    sent: int = 0
    lost: int = 0  # sent, but the connection died before an answer
    bad: list[str] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)


def _register(port: int, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/infra/workers/auto-register",
            json.dumps(body),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _burst(dash: Dash, token: str, ports: itertools.count[int], burst: Burst, seed: int) -> None:
    """Register new workers (and now and then one already acked) until the dashboard dies."""
    dash_port = int(dash.url.rsplit(":", 1)[1])
    mine: list[tuple[str, str, int]] = []
    for n in itertools.count():
        if mine and n % 5 == 4:  # the same secret again: same id back, never a second worker
            secret, wid, port = mine[(n * 7 + seed) % len(mine)]
        else:
            secret, wid, port = secrets.token_hex(32), "", next(ports)
        body = {"ip": "127.0.0.1", "secret": secret, "port": port}
        with burst.lock:
            burst.sent += 1
        try:
            status, doc = _register(dash_port, token, body)
        except (OSError, http.client.HTTPException):
            with burst.lock:
                burst.lost += 1
            return
        with burst.lock:
            # A new secret is created (201); a known one gets its own id back (200).
            if status != (200 if wid else 201) or (wid and doc["id"] != wid):
                burst.bad.append(f"{status} {doc} for {'known ' + wid if wid else 'new'}")
            elif not wid:
                burst.acked[secret] = (doc["id"], port)
                mine.append((secret, doc["id"], port))
            burst.lock.notify_all()


def _wait_acked(burst: Burst, count: int) -> None:
    with burst.lock:
        assert burst.lock.wait_for(lambda: len(burst.acked) >= count, timeout=60), burst.bad


def _integrity(db_path: Path) -> dict[str, Any]:
    """Open the database read-only: integrity check and the cross-table counts."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return {
            "integrity": db.execute("PRAGMA integrity_check").fetchall(),
            "workers": db.execute("SELECT count(*) FROM workers").fetchone()[0],
            "secrets": db.execute("SELECT count(DISTINCT secret_hash) FROM workers").fetchone()[0],
            "uses": db.execute("SELECT sum(uses) FROM tokens").fetchone()[0],
            "registered": db.execute(
                "SELECT count(*), count(DISTINCT worker_id) FROM history WHERE cause = ?",
                ("registered",),
            ).fetchone(),
        }
    finally:
        db.close()


def _check_consistent(facts: dict[str, Any]) -> None:
    assert facts["integrity"] == [("ok",)]
    n = facts["workers"]
    assert facts["secrets"] == n, "one secret stored twice"
    # The token's use count and the history entry are written in the worker's transaction.
    assert facts["uses"] == n, f"token uses {facts['uses']} for {n} workers"
    assert facts["registered"] == (n, n), "history out of step with the workers table"


def test_sigkill_mid_burst_keeps_every_acknowledged_registration(tmp_path: Path) -> None:
    ports = itertools.count(20_000)
    acked: dict[str, tuple[str, int]] = {}
    sent = lost = 0
    token = ""
    db_path = tmp_path / "dashboard-data" / "dashboard.db"
    for round_ in range(ROUNDS):
        with dashboard(tmp_path, name=f"round-{round_}") as dash:
            if round_ == 0:
                status, made = dash.call("POST", "/infra/tokens", {"description": "burst"})
                assert status == 201, made
                token = made["token"]
            else:
                _check_after_restart(dash, acked)
            burst = Burst()
            threads = [
                threading.Thread(target=_burst, args=(dash, token, ports, burst, i))
                for i in range(THREADS)
            ]
            for t in threads:
                t.start()
            _wait_acked(burst, 40 + 25 * round_)
            dash.proc.stop(signal.SIGKILL)
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads)
            assert burst.bad == []
            assert burst.lost > 0, "the kill landed after the burst: nothing was in flight"
            acked.update(burst.acked)
            sent, lost = sent + burst.sent, lost + burst.lost
            # What a crash leaves on disk, before any restart recovers it.
            _check_consistent(_integrity(db_path))
    with dashboard(tmp_path, name="final") as dash:
        workers = _check_after_restart(dash, acked)
    facts = _integrity(db_path)
    _check_consistent(facts)
    # Unacknowledged registrations may or may not have landed; nothing else may appear.
    assert len(acked) <= facts["workers"] == len(workers) <= len(acked) + lost
    assert sent > len(acked)


def _check_after_restart(dash: Dash, acked: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
    status, doc = dash.call("GET", "/infra/workers")
    assert status == 200
    workers = doc["workers"]
    by_id = {w["id"]: w for w in workers}
    assert len(by_id) == len(workers), "a worker id is listed twice"
    assert len({(w["ip"], w["port"]) for w in workers}) == len(workers), "an address twice"
    for wid, port in acked.values():
        assert wid in by_id, f"acknowledged registration {wid} lost"
        assert by_id[wid]["port"] == port
    return list(workers)
