"""`vectis register` and `vectis sync` as real processes against a dashboard stand-in.

The stand-in speaks docs/protocol.md#registration and docs/protocol.md#heartbeat on a loopback
port (auto-register with a token, a signed heartbeat with a signed answer) and can be told to
misbehave in ways the real dashboard never does on purpose: unsigned or wrongly signed
answers, 409, being down.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, run_cli
from vectis.crypto.secrets import create_secret_file, key_from_secret, read_secret_file
from vectis.crypto.signing import RequestVerifier, sign_response

TOKEN = "enroll-" + "t0k3n" * 6
ID = "brave-otter-3f2a"
ZONE = "fleet.test"


@dataclass
class Dashboard:
    """What the stand-in knows and how it should answer."""

    url: str = ""
    secret: str | None = None
    ip: str | None = None
    port: int | None = None
    revision: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    register_status: int | None = None  # force an answer (e.g. 409)
    sign: str = "good"  # "good", "none" or "wrong"
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    seen_headers: list[str] = field(default_factory=list)
    verifier: RequestVerifier | None = None


def _handler(dash: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None):
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            auth = self.headers.get("Authorization") or ""
            dash.seen_headers.append(auth)
            if self.path == "/infra/workers/auto-register":
                return self._register(raw, auth)
            if self.path == f"/infra/workers/{ID}/heartbeat":
                return self._heartbeat(raw, auth)
            return self._answer(404, {"error": "not_found", "message": "no such route"})

        def _register(self, raw: bytes, auth: str) -> None:
            if auth != f"Bearer {TOKEN}":
                return self._answer(401, {"error": "unauthorized"})
            if dash.register_status is not None:
                msg = "203.0.113.5:3000 belongs to another worker"
                return self._answer(dash.register_status, {"error": "conflict", "message": msg})
            doc = json.loads(raw)
            dash.registrations.append(doc)
            created = dash.secret is None
            dash.secret, dash.ip, dash.port = doc["secret"], doc["ip"], doc["port"]
            key = key_from_secret(dash.secret)
            dash.verifier = RequestVerifier(
                lambda wid: key if wid == ID else None, start_time=time.time() - 5
            )
            answer = {"id": ID, "subdomain": f"{ID}.{ZONE}", "ip": doc["ip"]}
            return self._answer(201 if created else 200, answer)

        def _heartbeat(self, raw: bytes, auth: str) -> None:
            assert dash.verifier is not None and dash.secret is not None
            try:
                req = dash.verifier.verify(auth, "POST", self.path, raw, now=time.time())
            except Exception:
                return self._answer(401, {"error": "unauthorized"})
            doc = json.loads(raw)
            dash.heartbeats.append(doc)
            dash.ip, dash.port = doc["ip"], doc["port"]
            body = {"status": "synced", "revision": dash.revision, "config": dash.config}
            data = json.dumps(body).encode()
            key = key_from_secret(dash.secret if dash.sign != "wrong" else "ab" * 32)
            headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
            if dash.sign != "none":
                ts = int(time.time())
                headers["X-Vectis-Signature"] = sign_response(key, ID, req.nonce, 200, data, ts=ts)
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def dashboard() -> Iterator[Dashboard]:
    dash = Dashboard()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(dash))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dash.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield dash
    server.shutdown()
    server.server_close()


@pytest.fixture
def worker(isolated: Path) -> Path:
    """A worker with a secret, set to report 203.0.113.5 and port 3000 to the stand-in."""
    conf_dir = Path(os.environ["VECTIS_CONFIG_DIR"])
    create_secret_file(conf_dir / "worker.secret")
    return conf_dir


def conf(worker: Path) -> dict[str, Any]:
    return tomllib.loads((worker / "worker.conf").read_text())


def vectis(*args: str, **env: str) -> tuple[int, Any, str]:
    done = run_cli(list(args), env={"VECTIS_IP_DNS_SERVER": "off", **env})
    data = json.loads(done.stdout) if "--json" in args else done.stdout
    return done.returncode, data, done.stderr


def test_no_token_stays_pending_and_says_how(worker: Path, dashboard: Dashboard) -> None:
    code, data, err = vectis("register", "--json", "--dashboard-url", dashboard.url)
    assert code == 10
    assert data["sync_status"] == "pending" and data["id"] is None
    assert "VECTIS_TOKEN" in err and "vectis register" in err
    assert conf(worker)["dashboard_url"] == dashboard.url  # remembered for later
    assert dashboard.registrations == []
    code, data, _ = vectis("sync", "--json")
    assert (code, data["sync_status"]) == (10, "pending")


def test_register_then_again_is_idempotent(worker: Path, dashboard: Dashboard) -> None:
    env = {"VECTIS_TOKEN": TOKEN, "VECTIS_DASHBOARD_URL": dashboard.url}
    code, data, err = vectis("register", "--json", "--ip", "203.0.113.5", **env)
    assert code == 0, err
    assert data["id"] == ID and data["subdomain"] == f"{ID}.{ZONE}"
    assert (data["sync_status"], data["ip"], data["port"]) == ("synced", "203.0.113.5", 3000)
    sent = dashboard.registrations[0]
    assert sent["secret"] == read_secret_file(worker / "worker.secret")
    assert sent["ip"] == "203.0.113.5" and sent["port"] == 3000 and sent["version"]
    assert sent["hostname"]
    written = conf(worker)
    assert written["state"]["id"] == ID and written["state"]["sync_status"] == "synced"
    assert written["dashboard_url"] == dashboard.url
    assert written["history"][-1]["status"] == "synced"
    assert stat.S_IMODE((worker / "worker.conf").stat().st_mode) == 0o600
    assert TOKEN not in (worker / "worker.conf").read_text()
    assert TOKEN not in json.dumps(data) + err

    code, data, _ = vectis("register", "--json", "--ip", "203.0.113.5", **env)
    assert (code, data["id"], data["sync_status"]) == (0, ID, "synced")
    assert len(dashboard.registrations) == 2


def test_a_port_given_to_register_is_remembered(worker: Path, dashboard: Dashboard) -> None:
    env = {"VECTIS_TOKEN": TOKEN, "VECTIS_DASHBOARD_URL": dashboard.url}
    code, data, err = vectis("register", "--json", "--ip", "203.0.113.5", "--port", "3999", **env)
    assert code == 0, err
    assert dashboard.registrations[-1]["port"] == 3999 and conf(worker)["port"] == 3999
    # So the next status sees no port change since the report.
    code, data, err = vectis("status", "--json")
    assert data["sync_status"] == "synced" and data["port"] == 3999, err


def test_token_file_and_stdin(worker: Path, dashboard: Dashboard, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    base = ["register", "--dashboard-url", dashboard.url, "--ip", "198.51.100.4"]
    code, _, err = vectis(*base, "--token-file", str(token_file))
    assert code == 0, err
    done = run_cli([*base, "--token-file", "-"], input=TOKEN + "\n")
    assert done.returncode == 0, done.stderr
    assert dashboard.seen_headers == [f"Bearer {TOKEN}"] * 2


def test_wrong_token_fails_readably(worker: Path, dashboard: Dashboard) -> None:
    code, data, err = vectis(
        "register",
        "--json",
        "--dashboard-url",
        dashboard.url,
        "--ip",
        "203.0.113.5",
        VECTIS_TOKEN="not-the-token",
    )
    assert code == 4
    assert data["sync_status"] == "failed"
    assert data["error"] == "the dashboard refused the enrollment token (401)"
    assert "refused the enrollment token" in err and "Traceback" not in err
    assert "not-the-token" not in err + json.dumps(data)
    assert conf(worker)["state"]["last_error"] == data["error"]


def test_conflict_and_unreachable(worker: Path, dashboard: Dashboard) -> None:
    dashboard.register_status = 409
    args = ("register", "--json", "--dashboard-url", dashboard.url, "--ip", "203.0.113.5")
    code, data, _ = vectis(*args, VECTIS_TOKEN=TOKEN)
    assert code == 11
    assert data["error"].startswith("the dashboard refused the registration (409)")
    assert "belongs to another worker" in data["error"]

    dead = f"http://127.0.0.1:{free_port()}"
    code, data, err = vectis(
        "register", "--json", "--dashboard-url", dead, "--ip", "203.0.113.5", VECTIS_TOKEN=TOKEN
    )
    assert code == 5
    assert data["error"].startswith(f"cannot reach the dashboard at {dead}")
    assert data["error"] in err
    assert data["consecutive_failures"] == 2


def test_bad_input_is_a_one_line_error(worker: Path, dashboard: Dashboard) -> None:
    code, _, err = vectis(
        "register", "--ip", "224.0.0.1", "--dashboard-url", dashboard.url, VECTIS_TOKEN=TOKEN
    )
    assert code == 2 and "multicast" in err and "Traceback" not in err
    code, _, err = vectis("register", "--dashboard-url", "ftp://x", VECTIS_TOKEN=TOKEN)
    assert code == 2 and "http:// or https://" in err
    code, _, err = vectis("register", VECTIS_TOKEN=TOKEN, VECTIS_PUBLIC_IP="203.0.113.5")
    assert code == 3 and "no dashboard URL" in err
    (worker / "worker.secret").unlink()
    code, _, err = vectis("register", "--dashboard-url", dashboard.url, VECTIS_TOKEN=TOKEN)
    assert code == 3 and "vectis worker init" in err
    assert not (worker / "worker.conf").exists() or "id" not in conf(worker)["state"]


def _registered(worker: Path, dashboard: Dashboard) -> None:
    code, _, err = vectis(
        "register", "--dashboard-url", dashboard.url, "--ip", "203.0.113.5", VECTIS_TOKEN=TOKEN
    )
    assert code == 0, err


def test_sync_sends_a_signed_heartbeat_and_applies_config(
    worker: Path, dashboard: Dashboard
) -> None:
    _registered(worker, dashboard)
    dashboard.revision, dashboard.config = 3, {"motd": "hello", "limits": {"cpu": 2}}
    code, data, err = vectis("sync", "--json", "--ip", "203.0.113.5")
    assert code == 0, err
    assert data["action"] == "heartbeat" and data["sync_status"] == "synced"
    assert data["config_applied"] is True and data["applied_revision"] == 3
    assert dashboard.heartbeats[-1] == {
        "ip": "203.0.113.5",
        "version": data["version"],
        "port": 3000,
        "applied_revision": 0,
        "apply_error": None,
    }
    assert conf(worker)["config"] == {"motd": "hello", "limits": {"cpu": 2}}
    assert dashboard.seen_headers[-1].startswith(f"Bearer v1.{ID}.")

    # The same revision again: nothing new to apply; the next heartbeat reports it.
    code, data, _ = vectis("sync", "--json", "--ip", "203.0.113.5")
    assert (code, data["config_applied"]) == (0, False)
    assert dashboard.heartbeats[-1]["applied_revision"] == 3


def test_sync_moves_the_ip(worker: Path, dashboard: Dashboard) -> None:
    _registered(worker, dashboard)
    code, data, _ = vectis(
        "sync", "--json", VECTIS_PUBLIC_IP="198.51.100.9", VECTIS_WORKER_PORT="3100"
    )
    assert code == 0
    assert (data["ip"], data["port"]) == ("198.51.100.9", 3100)
    assert (dashboard.ip, dashboard.port) == ("198.51.100.9", 3100)
    assert conf(worker)["state"]["ip"] == "198.51.100.9"


@pytest.mark.parametrize(("sign", "why"), [("none", "not signed"), ("wrong", "does not match")])
def test_unsigned_or_wrongly_signed_answer_is_an_identity_mismatch(
    worker: Path, dashboard: Dashboard, sign: str, why: str
) -> None:
    _registered(worker, dashboard)
    dashboard.sign = sign
    dashboard.revision, dashboard.config = 7, {"evil": True}
    code, data, err = vectis("sync", "--json", "--ip", "203.0.113.5")
    assert code == 11
    assert data["sync_status"] == "failed"
    assert data["error"].startswith("identity mismatch") and why in data["error"]
    assert "identity mismatch" in err
    assert conf(worker)["config"] == {} and data["applied_revision"] == 0


def test_changed_ip_that_cannot_be_reported_is_outdated(worker: Path, dashboard: Dashboard) -> None:
    _registered(worker, dashboard)
    dead = f"http://127.0.0.1:{free_port()}"
    code, data, _ = vectis("sync", "--json", "--dashboard-url", dead, "--ip", "198.51.100.9")
    assert code == 5
    assert data["sync_status"] == "outdated"
    assert data["ip"] == "203.0.113.5"  # still what the dashboard knows
    assert data["error"].startswith("cannot reach the dashboard")
    history = conf(worker)["history"][-1]
    assert history["status"] == "outdated" and "198.51.100.9" in history["cause"]
    # Unchanged facts and a dashboard that is down: failed.
    code, data, _ = vectis("sync", "--json", "--dashboard-url", dead, "--ip", "203.0.113.5")
    assert (code, data["sync_status"], data["consecutive_failures"]) == (5, "failed", 2)
    code, data, _ = vectis("sync", "--json", "--ip", "198.51.100.9")
    assert (code, data["sync_status"], data["error"]) == (0, "synced", None)


def test_sync_registers_when_not_registered(worker: Path, dashboard: Dashboard) -> None:
    code, data, err = vectis(
        "sync",
        "--json",
        "--dashboard-url",
        dashboard.url,
        "--ip",
        "203.0.113.5",
        VECTIS_TOKEN=TOKEN,
    )
    assert code == 0, err
    assert (data["action"], data["id"], data["sync_status"]) == ("register", ID, "synced")


def test_vectis_sync_entry_point(worker: Path, dashboard: Dashboard) -> None:
    import shutil
    import subprocess

    exe = shutil.which("vectis-sync")
    if exe is None:
        pytest.skip("vectis-sync is not on PATH (package not installed)")
    _registered(worker, dashboard)
    done = subprocess.run(
        [exe, "--json", "--ip", "203.0.113.5"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "VECTIS_IP_DNS_SERVER": "off"},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["action"] == "heartbeat"


def test_next_delay_backs_off_with_jitter() -> None:
    from vectis.worker.heartbeat_loop import MAX_BACKOFF, next_delay

    assert next_delay(60, 0, lambda: 0.5) == 60
    assert next_delay(60, 0, lambda: 0.0) == pytest.approx(54)
    assert next_delay(60, 0, lambda: 1.0) == pytest.approx(66)
    assert next_delay(60, 1, lambda: 0.5) == 120
    assert next_delay(60, 3, lambda: 0.5) == 480
    assert next_delay(60, 50, lambda: 0.5) == MAX_BACKOFF
    assert next_delay(3600, 5, lambda: 0.5) == 3600  # never shorter than the interval


async def _until(check: Any, timeout: float = 10) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_heartbeat_loop_reports_and_survives_failures(
    worker: Path, dashboard: Dashboard, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import logging

    from vectis.worker.heartbeat_loop import heartbeat_loop

    caplog.set_level(logging.INFO, logger="vectis.worker.heartbeat_loop")
    task = asyncio.create_task(heartbeat_loop("198.51.100.20", 3000, 0.2))
    await _until(lambda: "not registered yet" in caplog.text)
    assert dashboard.heartbeats == []
    _registered(worker, dashboard)
    await _until(lambda: len(dashboard.heartbeats) >= 2)
    assert dashboard.heartbeats[-1]["ip"] == "198.51.100.20"
    assert dashboard.ip == "198.51.100.20"
    await _until(lambda: conf(worker)["state"]["ip"] == "198.51.100.20")

    dashboard.sign = "none"  # now every answer fails: the loop keeps going and backs off
    await _until(lambda: "identity mismatch" in caplog.text)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert conf(worker)["state"]["sync_status"] == "failed"
    assert "heartbeat failed (1 in a row), failed: identity mismatch" in caplog.text
    secret = read_secret_file(worker / "worker.secret")
    assert secret not in caplog.text and TOKEN not in caplog.text


def test_worker_daemon_sends_heartbeats(worker: Path, dashboard: Dashboard) -> None:
    from tests.support import running

    _registered(worker, dashboard)
    port = free_port()
    env = {
        "VECTIS_HEARTBEAT_INTERVAL": "1",
        "VECTIS_PUBLIC_IP": "198.51.100.30",
        "VECTIS_WORKER_PORT": str(port),
    }
    log = worker.parent / "worker.log"
    args = ["worker", "serve", "--host", "127.0.0.1"]
    with running(args, ready_url=f"http://127.0.0.1:{port}/healthz", log=log, env=env) as proc:
        deadline = time.monotonic() + 15
        while not (dashboard.heartbeats and dashboard.heartbeats[-1]["ip"] == "198.51.100.30"):
            assert time.monotonic() < deadline, proc.output
            assert proc.alive(), proc.output
            time.sleep(0.05)
        assert dashboard.heartbeats[-1]["port"] == port
    assert (dashboard.ip, dashboard.port) == ("198.51.100.30", port)
