"""Issue 18: a worker's TLS key rotated under a steady sync loop, real processes.

`vectis rotate-tls-key` announces the next key in a signed heartbeat, switches the daemon to
it and retires the old one; syncs every 100 ms through the API (and a sweep every 200 ms)
never fail meanwhile, and the old key is refused afterwards. A rotation cut off at each step
leaves the worker reachable and finishes (or resumes) later.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tests.integration.test_dashboard_support import (
    ENROLL,
    Dash,
    WorkerHost,
    dashboard,
    worker_daemon,
    worker_host,
)
from tests.support import Repeating, run_cli, until
from vectis.configfile import TLS_NAME
from vectis.worker import key_rotation, tls


def _registered(dash: Dash, host: WorkerHost) -> str:
    """Register through `vectis register` (the pin in its body); the worker's id."""
    done = run_cli(
        ["register", "--json", "--dashboard-url", dash.url, "--ip", "127.0.0.1"],
        env=host.env(VECTIS_TOKEN=ENROLL),
    )
    assert done.returncode == 0, done.stderr
    worker_id = json.loads(done.stdout)["id"]
    assert dash.worker(worker_id)["tls_pin"] == host.tls_pin
    return str(worker_id)


class SyncLoop(Repeating):
    """`POST /infra/workers/<id>/sync` every 100 ms in a thread; every answer kept."""

    pause = 0.1

    def __init__(self, dash: Dash, worker_id: str) -> None:
        super().__init__()
        self.dash = dash
        self.worker_id = worker_id
        self.answers: list[tuple[int, Any]] = []

    def step(self) -> None:
        self.answers.append(self.dash.call("POST", f"/infra/workers/{self.worker_id}/sync"))

    def failures(self) -> list[Any]:
        return [doc for status, doc in self.answers if status != 200 or doc["status"] != "synced"]


class KeyWatch(Repeating):
    """Fresh TLS handshakes with the worker every 20 ms, each against the dashboard's pins.

    The dashboard's own syncs resume TLS sessions, which name the key of their first handshake;
    a dashboard that restarts makes full ones. The rotation must keep the key served among the
    keys the dashboard accepts at every moment, whichever way it connects.
    """

    pause = 0.02

    def __init__(self, dash: Dash, worker_id: str, port: int) -> None:
        super().__init__()
        self.dash, self.worker_id, self.port = dash, worker_id, port
        self.seen: set[str] = set()
        self.refused: list[tuple[str, set[str | None]]] = []

    def _pins(self) -> set[str | None]:
        doc = self.dash.worker(self.worker_id)
        return {doc["tls_pin"], doc["tls_pin_next"]}

    def step(self) -> None:
        # The pins read just before the handshake: a key served then must be among them.
        # (A rotation needs a heartbeat, two fsyncs and the daemon's next look at its file
        # between the two, far longer than the few milliseconds between them.)
        accepted = self._pins()
        served = key_rotation.served_pin("127.0.0.1", self.port)
        if served is not None:
            self.seen.add(served)
            if served not in accepted:
                self.refused.append((served, accepted))


def _rotate(host: WorkerHost) -> dict[str, Any]:
    done = run_cli(["rotate-tls-key", "--json", "--ip", "127.0.0.1"], env=host.env())
    assert done.returncode == 0, (done.stdout, done.stderr)
    return dict(json.loads(done.stdout))


def test_a_key_rotation_under_a_steady_sync_loop_fails_no_sync(tmp_path: Path) -> None:
    with dashboard(tmp_path, VECTIS_SYNC_INTERVAL="0.2") as dash:
        host = worker_host(tmp_path / "w1", tls=True)
        worker_id = _registered(dash, host)
        old_pin = host.tls_pin
        old_key = tmp_path / "old.tls.pem"
        shutil.copy(host.conf_dir / TLS_NAME, old_key)
        with worker_daemon(host, tmp_path / "w1.log") as daemon:
            with SyncLoop(dash, worker_id) as loop, KeyWatch(dash, worker_id, host.port) as keys:
                until(lambda: len(loop.answers) >= 5, "syncs before the rotation")
                before = len(loop.answers)
                done = _rotate(host)
                during = len(loop.answers) - before
                # Syncs go on across the switch and after it.
                until(lambda: len(loop.answers) >= before + during + 10, "syncs after it")
            assert loop.failures() == [], loop.failures()[:3]
            assert keys.refused == [], keys.refused[:3]
            assert keys.seen == {old_pin, host.tls_pin}, keys.seen
            # The loop really ran while the key changed (a loaded machine gives it fewer turns).
            assert during >= 2, during
            new_pin = host.tls_pin
            assert done["rotated"] and done["confirmed"] and not done["pending"], done
            assert done["tls_pin"] == new_pin and done["previous_tls_pin"] == old_pin
            assert new_pin not in (None, old_pin)
            assert key_rotation.served_pin("127.0.0.1", host.port) == new_pin
            assert "serving the new TLS key" in daemon.output
            shown = dash.worker(worker_id)
            assert shown["tls_pin"] == new_pin and shown["tls_pin_next"] is None
            # Neither the API's syncs nor the sweep's failed once the daemon answered: no
            # failure in the history after the first success (before it, no daemon ran yet).
            history = shown["history"]
            first = [change["status"] for change in history].index("synced")
            assert all(change["status"] != "failed" for change in history[first:]), history
        files = {p.name for p in host.conf_dir.iterdir()}
        assert TLS_NAME + tls.NEXT_SUFFIX not in files
        assert os.stat(host.conf_dir / TLS_NAME).st_mode & 0o077 == 0
        # The old key is refused now: a process serving it on the worker's address fails.
        impostor_dir = tmp_path / "impostor"
        shutil.copytree(host.conf_dir, impostor_dir)
        shutil.copy(old_key, impostor_dir / TLS_NAME)
        impostor = WorkerHost(impostor_dir, host.port)
        assert impostor.tls_pin == old_pin
        with worker_daemon(impostor, tmp_path / "impostor.log"):
            doc = dash.sync(worker_id)
        assert doc["status"] == "failed", doc
        assert doc["last_error"].startswith("identity mismatch") and "TLS key" in doc["last_error"]
        with worker_daemon(host, tmp_path / "w1-again.log"):
            assert dash.sync(worker_id)["status"] == "synced"


def test_a_rotation_cut_off_after_the_announce_keeps_syncing_and_resumes(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host = worker_host(tmp_path / "w1", tls=True)
        worker_id = _registered(dash, host)
        old_pin = host.tls_pin
        tls_file = host.conf_dir / TLS_NAME
        with worker_daemon(host, tmp_path / "w1.log"):
            # Cut off after steps 1 and 2: the next key written and announced, not served.
            pending = key_rotation.write_next(tls_file)
            assert os.stat(tls.next_path(tls_file)).st_mode & 0o777 == 0o600
            beat = run_cli(["sync", "--json", "--ip", "127.0.0.1"], env=host.env())
            assert beat.returncode == 0, beat.stderr
            shown = dash.worker(worker_id)
            assert (shown["tls_pin"], shown["tls_pin_next"]) == (old_pin, pending)
            assert dash.sync(worker_id)["status"] == "synced"  # the old key, still served
            # Run again, the command resumes with the key already announced.
            done = _rotate(host)
            assert done["resumed"] and done["rotated"] and done["tls_pin"] == pending, done
            shown = dash.sync(worker_id)
            assert shown["status"] == "synced"
            assert (shown["tls_pin"], shown["tls_pin_next"]) == (pending, None)


def test_a_rotation_cut_off_after_the_switch_is_finished_by_the_next_sync(
    tmp_path: Path,
) -> None:
    with dashboard(tmp_path) as dash:
        host = worker_host(tmp_path / "w1", tls=True)
        worker_id = _registered(dash, host)
        old_pin = host.tls_pin
        tls_file = host.conf_dir / TLS_NAME
        with worker_daemon(host, tmp_path / "w1.log"):
            pending = key_rotation.write_next(tls_file)
            beat = run_cli(["sync", "--json", "--ip", "127.0.0.1"], env=host.env())
            assert beat.returncode == 0, beat.stderr
            # Cut off after step 3: the file renamed, the daemon serves the new key, and the
            # dashboard was never told the old one is retired.
            key_rotation.switch(tls_file)
            until(
                lambda: key_rotation.served_pin("127.0.0.1", host.port) == pending,
                "the daemon serving the new key",
            )
            assert dash.worker(worker_id)["tls_pin_next"] == pending
            doc = dash.sync(worker_id)
            assert doc["status"] == "synced", doc
            # The sync met the announced next key: promoted, the old one retired.
            assert (doc["tls_pin"], doc["tls_pin_next"]) == (pending, None)
        impostor_dir = tmp_path / "impostor"
        shutil.copytree(host.conf_dir, impostor_dir)
        (impostor_dir / TLS_NAME).unlink()
        impostor = WorkerHost(impostor_dir, host.port)
        tls.create_tls_file(impostor_dir / TLS_NAME)
        assert impostor.tls_pin not in (old_pin, pending)
        with worker_daemon(impostor, tmp_path / "impostor.log"):
            assert dash.sync(worker_id)["status"] == "failed"


def test_a_refused_announce_rolls_the_rotation_back(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host = worker_host(tmp_path / "w1", tls=True)
        worker_id = _registered(dash, host)
        old_pin = host.tls_pin
        status, _ = dash.call("DELETE", f"/infra/workers/{worker_id}")
        assert status in (200, 204)
        started = time.monotonic()
        done = run_cli(["rotate-tls-key", "--json", "--ip", "127.0.0.1"], env=host.env())
        assert done.returncode != 0
        doc = json.loads(done.stdout)
        assert not doc["rotated"] and not doc["pending"] and doc["tls_pin"] == old_pin, doc
        assert "TLS key not rotated" in done.stderr
        assert host.tls_pin == old_pin
        assert not tls.next_path(host.conf_dir / TLS_NAME).exists()
        assert time.monotonic() - started < 30
        # Without --json: the same outcome as fields, the pin among them.
        done = run_cli(["rotate-tls-key", "--ip", "127.0.0.1"], env=host.env())
        assert done.returncode != 0 and done.stderr.startswith("vectis: TLS key not rotated")
        assert "rotated: False" in done.stdout and "pending: False" in done.stdout
        assert f"tls pin: {old_pin}" in done.stdout, done.stdout
