"""`vectis status` in every state: its fields, exit codes, --json, and the service probe."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_worker_daemon import WID, setup_worker, sync, worker_env
from tests.support import child_env, free_port, run_cli, running
from vectis.configfile import conf_path, locked_conf, secret_path
from vectis.crypto.secrets import create_secret_file
from vectis.status import SyncRecord, SyncStatus
from vectis.worker.host import probe_address

FIELDS = {
    "id",
    "subdomain",
    "ip",
    "port",
    "sync_status",
    "last_sync",
    "error",
    "service",
    "consecutive_failures",
    "applied_revision",
    "dashboard_url",
}


def status_json(env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    done = run_cli(["status", "--json"], env=env)
    return done.returncode, json.loads(done.stdout), done.stderr


def set_state(**state: Any) -> None:
    create_secret_file(secret_path())
    with locked_conf() as conf:
        conf.settings.host = "127.0.0.1"
        conf.settings.port = free_port()
        conf.settings.dashboard_url = "http://127.0.0.1:8080"
        conf.state.id = WID
        conf.state.subdomain = f"{WID}.fleet.test"
        conf.state.ip = "127.0.0.1"
        for name, value in state.items():
            setattr(conf.state, name, value)


def test_pending_when_nothing_is_set_up() -> None:
    code, doc, stderr = status_json()
    assert code == 10, stderr
    assert doc.keys() >= FIELDS
    assert doc["sync_status"] == "pending" and doc["id"] is None and doc["last_sync"] is None
    assert doc["error"] is None and doc["service"] == "stopped" and doc["port"] == 3000


def test_synced_exits_0_with_every_field() -> None:
    set_state(
        sync=SyncRecord(SyncStatus.SYNCED, last_sync="2026-01-02T03:04:05Z"), applied_revision=3
    )
    code, doc, stderr = status_json()
    assert code == 0, stderr
    assert doc["id"] == WID and doc["subdomain"] == f"{WID}.fleet.test"
    assert doc["ip"] == "127.0.0.1" and doc["sync_status"] == "synced"
    assert doc["last_sync"] == "2026-01-02T03:04:05Z" and doc["error"] is None
    assert doc["applied_revision"] == 3 and doc["consecutive_failures"] == 0
    assert doc["dashboard_url"] == "http://127.0.0.1:8080" and doc["service"] == "stopped"


def test_failed_exits_11_with_the_error() -> None:
    record = SyncRecord(
        SyncStatus.FAILED,
        last_sync="2026-01-02T03:04:05Z",
        last_error="dashboard unreachable: connection refused",
        consecutive_failures=4,
    )
    set_state(sync=record)
    code, doc, _ = status_json()
    assert code == 11
    assert doc["sync_status"] == "failed" and doc["consecutive_failures"] == 4
    assert doc["error"] == "dashboard unreachable: connection refused"
    human = run_cli(["status"])
    assert human.returncode == 11
    assert "error:" in human.stdout and "connection refused" in human.stdout


def test_outdated_exits_12_stored_or_from_local_facts() -> None:
    set_state(sync=SyncRecord(SyncStatus.OUTDATED, last_sync="2026-01-02T03:04:05Z"))
    code, doc, _ = status_json()
    assert (code, doc["sync_status"]) == (12, "outdated")
    # Stored as synced, but the port last reported is not the one configured now.
    with locked_conf() as conf:
        conf.state.sync = SyncRecord(SyncStatus.SYNCED, last_sync="2026-01-02T03:04:05Z")
        conf.state.reported_port = conf.settings.port + 1
    code, doc, _ = status_json()
    assert (code, doc["sync_status"]) == (12, "outdated")
    assert doc["outdated_reason"].startswith("port changed")


def test_bad_conf_is_exit_3_one_line_and_a_json_error() -> None:
    path = conf_path()
    path.parent.mkdir(parents=True)
    path.write_text('[state]\nsync_status = "sleeping"\n')
    done = run_cli(["status", "--json"])
    assert done.returncode == 3
    assert json.loads(done.stdout) == {
        "error": "config",
        "message": done.stderr.split(": ", 1)[1].rstrip("\n"),
    }
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "key 'state.sync_status'" in lines[0] and str(path) in lines[0]
    human = run_cli(["status"])
    assert human.returncode == 3 and human.stdout == "" and "Traceback" not in human.stderr
    path.unlink()
    bad_env = run_cli(["status", "--json"], env={"VECTIS_WORKER_PORT": "http"})
    assert bad_env.returncode == 3 and "VECTIS_WORKER_PORT" in bad_env.stderr
    assert json.loads(bad_env.stdout)["error"] == "config"


def test_service_running_when_the_daemon_answers(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    env = worker_env(w)
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log", env=env):
        assert sync(w)[0] == 200
        code, doc, _ = status_json(env)
        assert (code, doc["service"], doc["sync_status"]) == (0, "running", "synced")
        assert doc["port"] == w.port and doc["last_sync"] is not None
    code, doc, _ = status_json(env)
    assert doc["service"] == "stopped"


@pytest.fixture
def impostor() -> Iterator[int]:
    """Something else on the port: answers /healthz, but not as the daemon does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_service_stopped_when_something_else_answers(impostor: int) -> None:
    _, doc, _ = status_json({"VECTIS_WORKER_PORT": str(impostor)})
    assert doc["port"] == impostor and doc["service"] == "stopped"


def test_probe_address_for_wildcards() -> None:
    assert probe_address("0.0.0.0") == "127.0.0.1"
    assert probe_address("") == "127.0.0.1"
    assert probe_address("::") == "::1"
    assert probe_address("127.0.0.2") == "127.0.0.2"
    assert probe_address("[::1]") == "::1"


CHECK = """
import sys
from vectis.cli import main as m
path = sys.argv[1]
args = sys.argv[2:]
try:
    if path == "fast":
        m.main(["status", *args])
    elif path == "typer":
        m.run(m.app, ["status", *args], "vectis")
    elif path == "fast-single":
        m.status_main(args)
    else:
        m.run(m._single(m.status.status, m.status.status.__doc__), args, "vectis-status")
finally:
    heavy = {"aiohttp", "boto3", "botocore", "dns", "cryptography", "OpenSSL"}
    heavy = sorted({n.split(".")[0] for n in sys.modules} & heavy)
    sys.stderr.write(f"HEAVY={heavy}\\n")
"""


def through(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHECK, path, *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("args", [["--json"], []], ids=["json", "human"])
def test_lean_path_matches_typer_and_imports_nothing_heavy(args: list[str]) -> None:
    set_state(sync=SyncRecord(SyncStatus.FAILED, last_error="boom", consecutive_failures=1))
    runs = {p: through(p, *args) for p in ("fast", "typer", "fast-single", "typer-single")}
    for path, done in runs.items():
        assert "HEAVY=[]" in done.stderr, (path, done.stderr)
        assert done.returncode == 11, (path, done.stderr)
    outputs = {(d.stdout, d.stderr.replace("vectis-status", "vectis")) for d in runs.values()}
    assert len(outputs) == 1, outputs


def test_lean_path_matches_typer_on_errors() -> None:
    path = conf_path()
    path.parent.mkdir(parents=True)
    path.write_text("port = 0\n")
    fast, slow = through("fast", "--json"), through("typer", "--json")
    assert fast.returncode == slow.returncode == 3
    assert (fast.stdout, fast.stderr) == (slow.stdout, slow.stderr)


def test_help_and_other_arguments_go_through_typer() -> None:
    done = run_cli(["status", "--help"])
    assert done.returncode == 0 and "--json" in done.stdout and "Exit code" in done.stdout
    done = run_cli(["status", "--jsn"])
    assert done.returncode == 2 and "No such option" in done.stderr


def test_a_secret_the_daemon_would_refuse_is_a_config_error() -> None:
    set_state(sync=SyncRecord(SyncStatus.SYNCED, last_sync="2026-01-02T03:04:05Z"))
    secret_path().chmod(0o644)
    code, doc, _ = status_json()
    assert code == 3 and doc["error"] == "config" and "chmod 600" in doc["message"]
    secret_path().write_text("nothex\n")
    secret_path().chmod(0o600)
    code, doc, _ = status_json()
    assert code == 3 and "64 lowercase hex" in doc["message"]
    secret_path().unlink()
    code, doc, _ = status_json()
    assert code == 3 and "vectis worker init" in doc["message"]


def test_not_set_up_says_how_to_start() -> None:
    code, _, stderr = status_json()
    assert code == 10 and "vectis worker init" in stderr
