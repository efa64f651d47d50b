"""End to end: real dashboard and real worker processes on loopback (issue 3, "Done when")."""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

from tests.integration.test_dashboard_support import (
    ADMIN,
    dashboard,
    worker_daemon,
    worker_host,
)
from tests.support import run_cli
from vectis.configfile import read_conf


def test_register_sync_config_kill_and_impostor(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host = worker_host(tmp_path / "w1")
        status, reg = dash.register(host.secret, host.port, hostname="w1.test", version="0.1.0")
        assert status == 201, reg
        wid = reg["id"]
        assert reg["subdomain"] == f"{wid}.vectis.internal" and reg["ip"] == "127.0.0.1"
        assert dash.worker(wid)["status"] == "pending"
        host.enroll(wid, reg["subdomain"])

        with worker_daemon(host, tmp_path / "w1.log") as wproc:
            # A sync from the API reaches the real worker: synced, with its stats.
            doc = dash.sync(wid)
            assert doc["status"] == "synced", doc
            assert doc["last_error"] is None and doc["consecutive_failures"] == 0
            assert isinstance(doc["stats"], dict) and doc["stats"]
            assert doc["version"] and doc["last_sync"]
            assert doc["metadata"] and doc["applied_revision"] == 0

            # A config change makes it outdated; the next sync applies it on the worker.
            status, doc = dash.call("PUT", f"/infra/workers/{wid}/config", {"role": "edge"})
            assert status == 200, doc
            assert doc["status"] == "outdated" and doc["desired_revision"] == 1
            doc = dash.sync(wid)
            assert doc["status"] == "synced" and doc["applied_revision"] == 1
            conf = read_conf(host.conf_dir / "worker.conf")
            assert conf.config == {"role": "edge"} and conf.state.applied_revision == 1
            wproc.stop()

        # The worker process is gone: the next sync fails as unreachable.
        doc = dash.sync(wid)
        assert doc["status"] == "failed", doc
        assert doc["last_error"].startswith("unreachable"), doc["last_error"]
        assert doc["consecutive_failures"] == 1
        assert dash.sync(wid)["consecutive_failures"] == 2

        # Another worker (a different secret) now answers on the old address.
        impostor = worker_host(tmp_path / "w2", port=host.port)
        impostor.enroll("other-worker-0000", "other-worker-0000.vectis.internal")
        with worker_daemon(impostor, tmp_path / "w2.log"):
            doc = dash.sync(wid)
        assert doc["status"] == "failed"
        assert doc["last_error"].startswith("identity mismatch"), doc["last_error"]

        shown = dash.worker(wid)
        causes = [(h["status"], h["cause"]) for h in shown["history"]]
        assert causes[0] == ("pending", "registered")
        assert ("synced", "sync succeeded") in causes
        assert ("outdated", "config revision 1 set") in causes
        assert ("synced", "applied config revision 1") in causes
        assert causes[-1][0] == "failed" and causes[-1][1].startswith("unreachable")
        assert shown["config"] == {"role": "edge"}
        history_before = shown["history"]
        dash.proc.stop()
        assert dash.proc.popen.returncode == 0
        assert "stopped" in dash.proc.output

    # Restarted on the same data dir: every worker, status and history is still there.
    with dashboard(tmp_path, name="dashboard-2") as dash:
        again = dash.worker(wid)
        assert again["status"] == "failed" and again["history"] == history_before
        assert again["last_error"].startswith("identity mismatch")
        assert again["desired_revision"] == 1 and again["config"] == {"role": "edge"}
        status, doc = dash.call("GET", "/infra/workers")
        assert [w["id"] for w in doc["workers"]] == [wid]
        # The same secret registering again gets the same id back.
        status, reg = dash.register(host.secret, host.port)
        assert status == 200 and reg["id"] == wid


def test_heartbeat_from_vectis_sync_updates_the_ip(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host = worker_host(tmp_path / "w1")
        status, reg = dash.register(host.secret, host.port)
        assert status == 201
        host.enroll(reg["id"], reg["subdomain"], dashboard_url=dash.url)
        done = run_cli(["sync", "--json", "--ip", "127.0.0.9"], env=host.env())
        assert done.returncode == 0, done.stderr
        doc = dash.worker(reg["id"])
        assert doc["ip"] == "127.0.0.9" and doc["status"] == "synced", doc
        assert ("synced", "heartbeat") in [(h["status"], h["cause"]) for h in doc["history"]]
        assert read_conf(host.conf_dir / "worker.conf").state.sync.status.value == "synced"
        # The old address is free again: another secret can take it.
        other = worker_host(tmp_path / "w2", port=host.port)
        assert dash.register(other.secret, host.port)[0] == 201
        # ... and the new one is held (409).
        third = worker_host(tmp_path / "w3")
        assert dash.register(third.secret, host.port, ip="127.0.0.9")[0] == 409
    assert host.secret not in dash.proc.output and ADMIN not in dash.proc.output


def _silent_sockets(count: int) -> list[socket.socket]:
    """Sockets that accept connections (in the kernel's backlog) but never answer."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        socks.append(sock)
    return socks


def test_the_sweep_runs_periodically(tmp_path: Path) -> None:
    [silent] = _silent_sockets(1)
    silent_port = silent.getsockname()[1]
    try:
        with dashboard(tmp_path, VECTIS_SYNC_INTERVAL="1", VECTIS_SYNC_TIMEOUT="1") as dash:
            host = worker_host(tmp_path / "w1")
            status, reg = dash.register(host.secret, host.port)
            assert status == 201
            host.enroll(reg["id"], reg["subdomain"])
            stuck = worker_host(tmp_path / "w2", port=silent_port)
            status, reg2 = dash.register(stuck.secret, silent_port)
            assert status == 201
            with worker_daemon(host, tmp_path / "w1.log"):
                # No sync is asked for: only the periodic sweep can change these statuses.
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    good = dash.worker(reg["id"])
                    bad = dash.worker(reg2["id"])
                    if good["status"] == "synced" and bad["status"] == "failed":
                        break
                    time.sleep(0.2)
                assert good["status"] == "synced", good
                assert bad["status"] == "failed" and bad["last_error"].startswith(
                    "unreachable: no answer"
                ), bad
            status, text = dash.call("GET", "/metrics")
            assert status == 200
            assert 'vectis_workers{status="failed"} 1' in text
            assert 'vectis_syncs_total{outcome="synced"}' in text
            assert "vectis_sync_duration_seconds_bucket" in text
            assert 'vectis_registrations_total{result="created"} 2' in text
    finally:
        silent.close()


def test_a_dead_worker_never_delays_the_rest(tmp_path: Path) -> None:
    """A sweep waits one sync timeout for its dead workers all together, not one per worker.

    Three workers hang (they accept and never answer) and two answer. Synced one after the
    other, or two at a time, the dead ones alone would take at least 2 timeouts; at the
    default concurrency the whole sweep takes one timeout and a little.
    """
    timeout = 1.5
    dead = _silent_sockets(3)
    try:
        # No periodic sweep (interval 0): nothing else claims these workers while we measure.
        with dashboard(tmp_path, VECTIS_SYNC_TIMEOUT=str(timeout)) as dash:
            hosts, healthy, hanging = [], [], []
            for n in range(2):
                host = worker_host(tmp_path / f"good{n}")
                status, reg = dash.register(host.secret, host.port)
                assert status == 201, reg
                host.enroll(reg["id"], reg["subdomain"])
                hosts.append(host)
                healthy.append(reg["id"])
            for n, sock in enumerate(dead):
                port = sock.getsockname()[1]
                status, reg = dash.register(worker_host(tmp_path / f"dead{n}", port).secret, port)
                assert status == 201, reg
                hanging.append(reg["id"])
            with (
                worker_daemon(hosts[0], tmp_path / "good0.log"),
                worker_daemon(hosts[1], tmp_path / "good1.log"),
            ):
                started = time.monotonic()
                status, counts = dash.call("POST", "/infra/workers/sync")
                took = time.monotonic() - started
            assert status == 200, counts
            assert counts == {"total": 5, "synced": 2, "outdated": 0, "failed": 3}, counts
            for wid in healthy:
                assert dash.worker(wid)["status"] == "synced"
            for wid in hanging:
                doc = dash.worker(wid)
                assert doc["status"] == "failed", doc
                assert doc["last_error"].startswith("unreachable: no answer"), doc
            # The dead workers were waited for (one timeout), but only once, side by side.
            assert took >= timeout, took
            assert took < 2 * timeout, f"the sweep took {took:.2f} s for a {timeout} s timeout"
    finally:
        for sock in dead:
            sock.close()


def test_concurrent_syncs_of_one_worker_share_one_exchange(tmp_path: Path) -> None:
    import threading

    from tests.integration.test_dashboard_support import Dash

    # A worker that accepts and then says nothing; count its connections.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = silent.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        with dashboard(tmp_path, VECTIS_SYNC_TIMEOUT="1.5") as dash:
            _, reg = dash.register(secrets.token_hex(32), silent.getsockname()[1])
            results: list[tuple[int, object]] = []

            def sync(d: Dash = dash) -> None:
                results.append(d.call("POST", f"/infra/workers/{reg['id']}/sync"))

            started = time.monotonic()
            threads = [threading.Thread(target=sync) for _ in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - started
        assert [s for s, _ in results] == [200] * 5
        assert all(doc["status"] == "failed" for _, doc in results)  # type: ignore[index]
        assert len(held) == 1, len(held)
        assert took < 2.9, took  # one timeout, not five in a row
    finally:
        silent.close()
        for conn in held:
            conn.close()
