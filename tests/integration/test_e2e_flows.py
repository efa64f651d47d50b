"""Issue 4's "Done when", end to end: real dashboard, worker daemon, CLI and knotd on loopback.

The dashboard provisions DNS with the rfc2136 backend against a real knotd (TSIG-signed
updates), so "the DNS record follows the IP" is checked by querying knotd itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.knot import knot_server
from tests.support import VECTIS, child_env, free_port, http, run_cli, running, until

ZONE = "fleet.test"
ID_RE = re.compile(r"^[a-z]+(-[a-z]+)*-[0-9a-f]{4}$")
ADMIN = "admin-" + "a1b2c3d4e5" * 3
ENROLL = "enroll-" + "e5f6a7b8c9" * 3


class Worker:
    """One worker's config dir, and the commands run against it."""

    def __init__(self, conf_dir: Path, port: int) -> None:
        self.conf_dir, self.port = conf_dir, port

    def env(self, **extra: str) -> dict[str, str]:
        return {"VECTIS_CONFIG_DIR": str(self.conf_dir), "VECTIS_IP_DNS_SERVER": "off", **extra}

    def cli(self, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
        done = run_cli(list(args), env=self.env(**env))
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout), done.stderr

    def status(self, **env: str) -> tuple[int, dict[str, Any]]:
        """`vectis status --json`, also checked as shell use: its stdout is only the JSON."""
        exe = shutil.which("vectis") or " ".join(VECTIS)
        check = "import json,sys; json.load(sys.stdin)"
        pipe = f"{exe} status --json | {VECTIS[0]} -c '{check}'"
        shell = subprocess.run(
            ["bash", "-c", pipe], env=child_env(self.env(**env)), capture_output=True, timeout=60
        )
        assert shell.returncode == 0, shell.stderr
        code, data, _ = self.cli("status", "--json", **env)
        return code, data


def admin(method: str, url: str) -> tuple[int, dict[str, Any]]:
    code, _, body = http(
        method,
        url,
        b"" if method == "POST" else None,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    return code, json.loads(body)


@pytest.mark.dns
@pytest.mark.slow
def test_register_sync_ip_change_and_wrong_token(tmp_path: Path) -> None:
    with knot_server(tmp_path / "knot", zone=ZONE) as knot:
        assert knot.key is not None
        key_file = knot.key.write(tmp_path / "tsig.key")
        dash_port = free_port()
        url = f"http://127.0.0.1:{dash_port}"
        dash_env = {
            "VECTIS_ADMIN_TOKEN": ADMIN,
            "VECTIS_TOKEN": ENROLL,
            "VECTIS_SYNC_INTERVAL": "0",
            "VECTIS_RFC2136_SERVER": "127.0.0.1",
            "VECTIS_RFC2136_PORT": str(knot.port),
            "VECTIS_RFC2136_TSIG_FILE": str(key_file),
        }
        dash_args = [
            "dashboard",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(dash_port),
            "--data-dir",
            str(tmp_path / "data"),
            "--zone",
            ZONE,
            "--dns-backend",
            "rfc2136",
        ]
        with running(
            dash_args, ready_url=f"{url}/healthz", log=tmp_path / "dash.log", env=dash_env
        ) as dashboard:
            _flows(tmp_path, url, knot)
            assert ENROLL not in dashboard.output and ADMIN not in dashboard.output


def _flows(tmp_path: Path, url: str, knot: Any) -> None:
    w = Worker(tmp_path / "worker", free_port("127.0.0.2"))
    done = run_cli(
        ["worker", "init", "--dashboard-url", url, "--host", "127.0.0.1", "--port", str(w.port)],
        env=w.env(),
    )
    assert done.returncode == 0, done.stderr

    serve = ["worker", "serve"]
    daemon_env = w.env(VECTIS_PUBLIC_IP="127.0.0.1")
    with running(
        serve,
        ready_url=f"https://127.0.0.1:{w.port}/healthz",
        log=tmp_path / "worker1.log",
        env=daemon_env,
    ):
        # No token: pending, and the message says how to register.
        code, data, err = w.cli("register", "--json")
        assert (code, data["sync_status"]) == (10, "pending")
        assert "VECTIS_TOKEN" in err
        code, status = w.status()
        assert (code, status["sync_status"], status["id"]) == (10, "pending", None)

        # With the token: synced, a readable id, its subdomain in the zone.
        code, data, err = w.cli(
            "register", "--json", VECTIS_TOKEN=ENROLL, VECTIS_PUBLIC_IP="127.0.0.1"
        )
        assert code == 0, err
        worker_id = data["id"]
        assert ID_RE.match(worker_id), worker_id
        assert data["subdomain"] == f"{worker_id}.{ZONE}"
        assert (data["sync_status"], data["ip"]) == ("synced", "127.0.0.1")
        code, status = w.status(VECTIS_PUBLIC_IP="127.0.0.1")
        assert (code, status["sync_status"], status["id"]) == (0, "synced", worker_id)
        assert status["service"] == "running"

        # The dashboard syncs it: synced, with stats; and DNS points at it.
        code, synced = admin("POST", f"{url}/infra/workers/{worker_id}/sync")
        assert code == 200, synced
        synced = synced.get("worker", synced)
        assert synced["status"] == "synced" and synced["stats"], synced
        until(lambda: knot.query(data["subdomain"], "A") == ["127.0.0.1"], "the A record")

    # The worker's IP changes. Its daemon is down meanwhile, so that only `vectis sync`
    # (not the daemon's own heartbeat) reports the new address here.
    code, status = w.status(VECTIS_PUBLIC_IP="127.0.0.2")
    assert (code, status["sync_status"], status["service"]) == (12, "outdated", "stopped")

    code, data, err = w.cli("sync", "--json", VECTIS_PUBLIC_IP="127.0.0.2")
    assert code == 0, err
    assert (data["action"], data["sync_status"], data["ip"]) == ("heartbeat", "synced", "127.0.0.2")
    code, shown = admin("GET", f"{url}/infra/workers/{worker_id}")
    assert code == 200 and shown.get("worker", shown)["ip"] == "127.0.0.2", shown
    until(lambda: knot.query(f"{worker_id}.{ZONE}", "A") == ["127.0.0.2"], "the moved A record")

    # A config set on the dashboard reaches the worker through its next heartbeat.
    code, _, body = http(
        "PUT",
        f"{url}/infra/workers/{worker_id}/config",
        {"motd": "hi"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert code == 200, body
    code, data, err = w.cli("sync", "--json", VECTIS_PUBLIC_IP="127.0.0.2")
    assert (code, data["config_applied"], data["applied_revision"]) == (0, True, 1), err
    assert "motd" in (w.conf_dir / "worker.conf").read_text()

    # The daemon comes back on 127.0.0.2.
    moved_env = w.env(VECTIS_PUBLIC_IP="127.0.0.2")
    with running(
        [*serve, "--host", "127.0.0.2"],
        ready_url=f"https://127.0.0.2:{w.port}/healthz",
        log=tmp_path / "worker2.log",
        env=moved_env,
    ):
        # The dashboard reaches it at the new address.
        code, synced = admin("POST", f"{url}/infra/workers/{worker_id}/sync")
        synced = synced.get("worker", synced)
        assert (code, synced["status"], synced["ip"]) == (200, "synced", "127.0.0.2"), synced
        code, status = w.status(VECTIS_PUBLIC_IP="127.0.0.2")
        assert (code, status["sync_status"], status["ip"]) == (0, "synced", "127.0.0.2")

    # A wrong token leaves a (new) worker failed, with a readable error and a non-zero exit.
    other = Worker(tmp_path / "other", free_port())
    done = run_cli(
        ["worker", "init", "--dashboard-url", url, "--port", str(other.port)], env=other.env()
    )
    assert done.returncode == 0, done.stderr
    code, data, err = other.cli(
        "register", "--json", VECTIS_TOKEN="wrong-token", VECTIS_PUBLIC_IP="127.0.0.3"
    )
    assert code == 4
    assert data["sync_status"] == "failed"
    assert data["error"] == "the dashboard refused the enrollment token (401)"
    assert "refused the enrollment token" in err and "wrong-token" not in err
    code, status = other.status()
    assert (code, status["sync_status"], status["error"]) == (11, "failed", data["error"])
