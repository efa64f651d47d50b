"""End to end: a real `vectis dashboard serve` on a real PostgreSQL keeps its fleet there."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.test_dashboard_support import (
    ADMIN,
    Dash,
    dashboard_env,
    worker_daemon,
    worker_host,
)
from tests.pg import PgServer
from tests.support import free_port, http, run_cli, running, wait_ready

PASSWORD = "pg-password-never-shown"


def _serve(tmp_path: Path, name: str, url: str, *, flag: bool) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a dashboard on `url`, given by flag or variable."""
    port = free_port()
    args = ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = dashboard_env(tmp_path / f"{name}-data")
    if flag:
        args += ["--database-url", url]
    else:
        env["VECTIS_DATABASE_URL"] = url
    return args, env


def test_the_fleet_lives_in_postgresql_across_restarts(tmp_path: Path, pg_server: PgServer) -> None:
    plain = pg_server.create_database()
    # Trust authentication ignores the password; the dashboard must still never show it.
    url = plain.replace("postgres@", f"postgres:{PASSWORD}@")
    args, env = _serve(tmp_path, "first", url, flag=False)
    with running(args, ready_url=None, log=tmp_path / "first.log", env=env) as proc:
        base = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
        wait_ready(base + "/healthz", proc, 20)
        dash = Dash(base, proc, tmp_path / "first-data")
        host = worker_host(tmp_path / "w1")
        status, reg = dash.register(host.secret, host.port, hostname="w1.test")
        assert status == 201, reg
        wid = reg["id"]
        host.enroll(wid, reg["subdomain"], dashboard_url=dash.url)
        with worker_daemon(host, tmp_path / "w1.log"):
            doc = dash.sync(wid)
            assert doc["status"] == "synced" and doc["stats"], doc
        # A signed heartbeat (`vectis sync` on the worker) that moves the worker's IP.
        done = run_cli(["sync", "--json", "--ip", "127.0.0.9"], env=host.env())
        assert done.returncode == 0, done.stderr
        status, doc = dash.call("PUT", f"/infra/workers/{wid}/config", {"role": "edge"})
        assert status == 200 and doc["desired_revision"] == 1, doc
        before = dash.worker(wid)
        assert before["ip"] == "127.0.0.9" and before["config"] == {"role": "edge"}
        causes = [(h["status"], h["cause"]) for h in before["history"]]
        assert causes == [
            ("pending", "registered"),
            ("synced", "sync succeeded"),
            ("outdated", "config revision 1 set"),
        ], causes
        proc.stop()
        assert proc.popen.returncode == 0, proc.output
    assert PASSWORD not in proc.output and ADMIN not in proc.output
    assert not (tmp_path / "first-data" / "dashboard.db").exists()

    # Another dashboard, with another (empty) data dir and the URL as a flag: the same fleet.
    args, env = _serve(tmp_path, "second", url, flag=True)
    with running(args, ready_url=None, log=tmp_path / "second.log", env=env) as proc:
        base = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
        wait_ready(base + "/healthz", proc, 20)
        dash = Dash(base, proc, tmp_path / "second-data")
        again = dash.worker(wid)
        assert again == before  # every field, its config and its history
        status, listed = dash.call("GET", "/infra/workers")
        assert status == 200 and [w["id"] for w in listed["workers"]] == [wid]
        # The same secret registering again gets the same id back.
        status, reg = dash.register(host.secret, host.port, ip="127.0.0.9")
        assert status == 200 and reg["id"] == wid
    assert PASSWORD not in proc.output


def _health(base: str) -> int:
    status, _, _ = http("GET", base + "/healthz", timeout=5)
    return status


def _until(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_healthz_answers_503_while_the_database_is_down(tmp_path: Path) -> None:
    server = PgServer.start_new()  # a cluster of its own: this test stops it
    try:
        args, env = _serve(tmp_path, "health", server.create_database(), flag=True)
        with running(args, ready_url=None, log=tmp_path / "health.log", env=env) as proc:
            base = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
            wait_ready(base + "/healthz", proc, 20)
            dash = Dash(base, proc, tmp_path / "health-data")
            assert dash.call("GET", "/infra/workers")[0] == 200
            server.stop()
            assert _until(lambda: _health(base) == 503), proc.output
            status, _, raw = http("GET", base + "/healthz")
            assert status == 503 and json.loads(raw)["status"] == "unavailable"
            # Calls that need the database are refused with 503 and Retry-After, never a 500.
            status, headers, raw = http(
                "GET", base + "/infra/workers", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert status == 503, raw
            assert json.loads(raw)["error"] == "unavailable" and headers["Retry-After"] == "1"
            server.start()
            assert _until(lambda: _health(base) == 200), proc.output
            # Back in service: the pool replaces the connections the restart cut; meanwhile
            # every answer is a 200 or a 503, never a 500.
            codes: list[int] = []
            assert _until(
                lambda: codes.append(dash.call("GET", "/infra/workers")[0]) or codes[-1] == 200
            ), proc.output
            assert set(codes) <= {200, 503}, codes
            assert "unexpected error" not in proc.output
            assert dash.register(worker_host(tmp_path / "w").secret, free_port())[0] == 201
    finally:
        server.destroy()
