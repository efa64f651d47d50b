"""`vectis rotate-secret` against a real dashboard and a real worker daemon on loopback.

Both sides switch without a failed sync, the old secret stops working on both sides, a
rotation cut off after the dashboard switched finishes by itself, and no secret is printed.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_dashboard_support import (
    ADMIN,
    ENROLL,
    Dash,
    WorkerHost,
    dashboard,
    worker_host,
)
from tests.support import Proc, Repeating, free_port, http, run_cli, running, until
from vectis.crypto.secrets import generate_secret
from vectis.crypto.signing import new_nonce, sign_request, verify_response
from vectis.worker.runtime import RECHECK_INTERVAL

HEARTBEAT = {"ip": "127.0.0.1", "applied_revision": 0}


def signed(secret: str, worker_id: str, path: str, body: bytes) -> dict[str, str]:
    """Headers of a request signed with `secret` (docs/protocol.md#signed-requests)."""
    auth = sign_request(
        bytes.fromhex(secret),
        worker_id,
        "POST",
        path,
        body,
        ts=int(time.time()),
        nonce=new_nonce(os.urandom),
    )
    return {"Authorization": auth, "Content-Type": "application/json"}


def post_signed(base: str, secret: str, worker_id: str, path: str, doc: Any) -> int:
    body = json.dumps(doc).encode()
    status, _, _ = http("POST", base + path, body, signed(secret, worker_id, path, body))
    return status


def cli(host: WorkerHost, *args: str) -> tuple[int, dict[str, Any], str]:
    done = run_cli(list(args), env=host.env(VECTIS_PUBLIC_IP="127.0.0.1"))
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stdout + done.stderr


def enrolled(tmp_path: Path, dash: Dash, name: str = "w1") -> tuple[WorkerHost, str]:
    host = worker_host(tmp_path / name)
    status, reg = dash.register(host.secret, host.port)
    assert status == 201, reg
    host.enroll(reg["id"], reg["subdomain"], dashboard_url=dash.url)
    return host, str(reg["id"])


@contextmanager
def daemon(host: WorkerHost, log: Path) -> Iterator[Proc]:
    """`vectis worker serve` with a heartbeat every second, so beats race the rotation too."""
    env = host.env(VECTIS_PUBLIC_IP="127.0.0.1", VECTIS_HEARTBEAT_INTERVAL="1")
    with running(
        ["worker", "serve", "--host", "127.0.0.1", "--port", str(host.port)],
        ready_url=f"http://127.0.0.1:{host.port}/healthz",
        log=log,
        env=env,
    ) as proc:
        yield proc


class SyncLoop(Repeating):
    """Dashboard syncs of one worker, back to back (one, then all), in a thread."""

    def __init__(self, dash: Dash, worker_id: str) -> None:
        super().__init__()
        self.dash, self.worker_id = dash, worker_id
        self.outcomes: list[str] = []

    def step(self) -> None:
        status, doc = self.dash.call("POST", f"/infra/workers/{self.worker_id}/sync")
        self.outcomes.append(doc["status"] if status == 200 else f"http {status}")
        status, doc = self.dash.call("POST", "/infra/workers/sync")
        ok = status == 200 and doc["failed"] == 0 and doc["synced"] == 1
        self.outcomes.append("synced" if ok else f"sweep {status} {doc}")


def test_rotation_while_syncs_and_heartbeats_run(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host, wid = enrolled(tmp_path, dash)
        old = host.secret
        with daemon(host, tmp_path / "worker.log") as wproc:
            assert dash.sync(wid)["status"] == "synced"
            with SyncLoop(dash, wid) as loop:
                until(lambda: len(loop.outcomes) >= 10, "syncs before the rotation")
                code, data, out = cli(host, "rotate-secret", "--json")
                assert code == 0, out
                done_at = len(loop.outcomes)
                until(lambda: len(loop.outcomes) >= done_at + 10, "syncs after the rotation")
            assert loop.outcomes and set(loop.outcomes) == {"synced"}, loop.outcomes

            assert data == {
                "action": "rotate-secret",
                "id": wid,
                "rotated": True,
                "resumed": False,
                "pending": False,
                "message": data["message"],
            }
            new = host.secret
            assert new != old and len(new) == 64
            secret_file = host.conf_dir / "worker.secret"
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            assert not (host.conf_dir / "worker.secret.next").exists()

            # Both sides use the new secret: a dashboard sync and a heartbeat succeed.
            assert dash.sync(wid)["status"] == "synced"
            code, beat, out = cli(host, "sync", "--json")
            assert (code, beat["action"], beat["sync_status"]) == (0, "heartbeat", "synced"), out

            # The old secret opens nothing: not the worker's /sync (which looks at the secret
            # files at most every RECHECK_INTERVAL), not the dashboard.
            time.sleep(RECHECK_INTERVAL)
            worker_url = f"http://127.0.0.1:{host.port}"
            assert post_signed(worker_url, old, wid, "/sync", {"revision": 0, "config": {}}) == 401
            heartbeat = f"/infra/workers/{wid}/heartbeat"
            assert post_signed(dash.url, old, wid, heartbeat, HEARTBEAT) == 401
            assert post_signed(dash.url, new, wid, heartbeat, HEARTBEAT) == 200
            assert post_signed(worker_url, new, wid, "/sync", {"revision": 0, "config": {}}) == 200

            # The daemon's own heartbeats never failed while the secret changed under them.
            until(lambda: "the worker secret changed" in wproc.output, "the daemon's reload")
            assert "heartbeat failed" not in wproc.output
            causes = [h["cause"] for h in dash.worker(wid)["history"]]
            assert "secret rotated" in causes

        logs = wproc.output + dash.proc.output + out
        for secret in (old, new):
            assert secret not in logs
            assert secret not in json.dumps(dash.worker(wid))


def crash_after_the_dashboard_switched(dash: Dash, host: WorkerHost, wid: str) -> str:
    """What `vectis rotate-secret` leaves when killed right after the dashboard answered."""
    new = generate_secret()
    pending = host.conf_dir / "worker.secret.next"
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (new + "\n").encode())
    os.close(fd)
    route = f"/infra/workers/{wid}/rotate-secret"
    assert post_signed(dash.url, host.secret, wid, route, {"new_secret": new}) == 200
    return new


def test_a_daemon_finishes_an_interrupted_rotation_by_itself(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host, wid = enrolled(tmp_path, dash)
        old = host.secret
        with daemon(host, tmp_path / "worker.log") as wproc:
            assert dash.sync(wid)["status"] == "synced"
            new = crash_after_the_dashboard_switched(dash, host, wid)
            # The dashboard signs with the new secret already: the daemon accepts it.
            assert dash.sync(wid)["status"] == "synced"
            # The daemon's next heartbeat is refused under the old secret, retried under the
            # pending one, and finishes the rotation: no one has to do anything.
            until(lambda: host.secret == new, "the daemon to finish the rotation")
            assert not (host.conf_dir / "worker.secret.next").exists()
            until(lambda: "finished the pending secret rotation" in wproc.output, "its log")
            assert dash.sync(wid)["status"] == "synced"
            time.sleep(RECHECK_INTERVAL)  # the daemon's /sync looks at the files this often
            worker_url = f"http://127.0.0.1:{host.port}"
            assert post_signed(worker_url, old, wid, "/sync", {"revision": 0, "config": {}}) == 401
        assert old not in wproc.output and new not in wproc.output


@pytest.mark.parametrize("command", ["sync", "rotate-secret"])
def test_the_next_command_finishes_an_interrupted_rotation(tmp_path: Path, command: str) -> None:
    with dashboard(tmp_path) as dash:
        host, wid = enrolled(tmp_path, dash)
        old = host.secret
        new = crash_after_the_dashboard_switched(dash, host, wid)
        code, data, out = cli(host, command, "--json")
        assert code == 0, out
        if command == "rotate-secret":
            assert (data["rotated"], data["resumed"], data["pending"]) == (True, True, False)
        else:
            assert data["sync_status"] == "synced"
        assert host.secret == new
        assert not (host.conf_dir / "worker.secret.next").exists()
        heartbeat = f"/infra/workers/{wid}/heartbeat"
        assert post_signed(dash.url, old, wid, heartbeat, HEARTBEAT) == 401
        assert post_signed(dash.url, new, wid, heartbeat, HEARTBEAT) == 200
        assert old not in out and new not in out


def test_a_failed_rotation_leaves_the_old_secret_in_force(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host, wid = enrolled(tmp_path, dash)
        old = host.secret
        pending = host.conf_dir / "worker.secret.next"

        # Unreachable: the dashboard may or may not have switched, so the pending secret stays.
        nowhere = f"http://127.0.0.1:{free_port()}"
        code, data, out = cli(host, "rotate-secret", "--json", "--dashboard-url", nowhere)
        assert code == 5, out
        assert (data["rotated"], data["pending"]) == (False, True)
        assert "old secret stays in force" in data["message"]
        assert host.secret == old and pending.exists()
        assert stat.S_IMODE(pending.stat().st_mode) == 0o600
        heartbeat = f"/infra/workers/{wid}/heartbeat"
        assert post_signed(dash.url, old, wid, heartbeat, HEARTBEAT) == 200

        # The next run sends that same pending secret and finishes.
        waiting = pending.read_text().strip()
        code, data, out = cli(host, "rotate-secret", "--json")
        assert code == 0, out
        assert (data["rotated"], data["resumed"]) == (True, True)
        assert host.secret == waiting and not pending.exists()

        # A refusal (the worker was deleted there) proves nothing switched: nothing pending.
        current = host.secret
        status, _ = dash.call("DELETE", f"/infra/workers/{wid}")
        assert status == 200
        done = run_cli(["rotate-secret"], env=host.env())
        assert done.returncode == 4, done.stderr
        assert "rotated: False" in done.stdout and "pending: False" in done.stdout
        assert done.stderr.startswith("vectis: secret not rotated: the dashboard refused")
        assert "stays in force on the worker and the dashboard" in done.stderr
        assert "Traceback" not in done.stderr
        out = done.stdout + done.stderr
        assert host.secret == current and not pending.exists()
        for secret in (old, waiting, current):
            assert secret not in out and secret not in dash.proc.output


def test_rotate_secret_route(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host, wid = enrolled(tmp_path, dash)
        other, other_id = enrolled(tmp_path, dash, "w2")
        old = host.secret
        route = f"/infra/workers/{wid}/rotate-secret"
        heartbeat = f"/infra/workers/{wid}/heartbeat"
        new = generate_secret()

        # Unsigned, signed by another worker, or at a non-canonical path: the same 401.
        status, doc = dash.call("POST", route, {"new_secret": new}, token=None)
        assert (status, doc) == (401, {"error": "unauthorized"})
        assert post_signed(dash.url, other.secret, other_id, route, {"new_secret": new}) == 401
        assert post_signed(dash.url, old, wid, route + "?x=1", {"new_secret": new}) == 401

        # A bad new secret is a 400 (a degenerate one too: all zeros, a short repeated
        # pattern); another worker's is a 409; either way nothing changes.
        for bad in (
            {"new_secret": "abc"},
            {"new_secret": 5},
            {"new_secret": "g" * 64},
            {"new_secret": "00" * 32},
            {"new_secret": "0123456789abcdef" * 4},
            {},
        ):
            assert post_signed(dash.url, old, wid, route, bad) == 400, bad
        assert post_signed(dash.url, old, wid, route, {"new_secret": other.secret}) == 409
        assert post_signed(dash.url, old, wid, heartbeat, HEARTBEAT) == 200

        # The switch: answered 200, signed with the new secret.
        body = json.dumps({"new_secret": new}).encode()
        headers = signed(old, wid, route, body)
        nonce = headers["Authorization"].split(".")[3]
        status, answer_headers, raw = http("POST", dash.url + route, body, headers)
        assert status == 200, raw
        assert json.loads(raw) == {"id": wid, "changed": True}
        verify_response(
            bytes.fromhex(new), wid, nonce, 200, raw, answer_headers["X-Vectis-Signature"]
        )
        # A replay of it is refused; the old secret opens nothing now.
        assert http("POST", dash.url + route, body, headers)[0] == 401
        assert post_signed(dash.url, old, wid, heartbeat, HEARTBEAT) == 401
        assert post_signed(dash.url, old, wid, route, {"new_secret": generate_secret()}) == 401

        # The same rotation again, signed with the new secret: success, nothing to change.
        body = json.dumps({"new_secret": new}).encode()
        status, _, raw = http("POST", dash.url + route, body, signed(new, wid, route, body))
        assert (status, json.loads(raw)) == (200, {"id": wid, "changed": False})
        assert post_signed(dash.url, new, wid, heartbeat, HEARTBEAT) == 200

        # Re-registering with the new secret finds the same worker.
        status, reg = dash.register(new, host.port)
        assert (status, reg["id"]) == (200, wid)
        for secret in (old, new, other.secret):
            assert secret not in dash.proc.output
        assert ENROLL not in dash.proc.output and ADMIN not in dash.proc.output
