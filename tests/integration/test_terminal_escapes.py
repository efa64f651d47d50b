"""Attacks on the operator's terminal through what the real `vectis` commands print.

A hostile worker (a signed fake answering the real dashboard's syncs), a hostile or spoofed
dashboard (a fake answering the admin and registration APIs) and a tampered worker.conf put
terminal escapes, C1 controls, bidi overrides and rich markup into every text the CLI shows.
No raw control may reach stdout or stderr; people see the escapes and the markup as text;
`--json` carries the exact values.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, http, run_cli, running
from vectis.cli.render import clean
from vectis.configfile import locked_conf, secret_path
from vectis.crypto.secrets import create_secret_file
from vectis.crypto.signing import SIGNATURE_HEADER, RequestVerifier, sign_response
from vectis.status import SyncRecord, SyncStatus

MARKUP = "[reverse]x[/reverse] [link=http://e]x[/link] [bold red]y[/] :smile:"
ESCAPES = "\x1b]0;x\x07 \x1b[2J \x1b]8;;http://evil\x1b\\ \x9b \u202e"
ATTACK = f"a {ESCAPES} {MARKUP} z"
# What must never reach a terminal: C0 but the line break, DEL, C1, bidi overrides/isolates.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
ADMIN = secrets.token_urlsafe(24)
ENROLL = secrets.token_urlsafe(24)
WIDE = {"COLUMNS": "1000"}  # rich's width: no cell is folded in the middle of an attack


def assert_no_raw(*streams: str) -> None:
    for stream in streams:
        found = RAW.search(stream)
        assert found is None, f"raw {found.group()!r} reached the terminal: {stream!r}"


def assert_shown(output: str, *, escapes: bool = True) -> None:
    """The markup is printed literally and, when asked, the escapes in their escaped form."""
    assert_no_raw(output)
    assert MARKUP in output, output
    if escapes:
        assert clean(ESCAPES) in output, output


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str, str, bytes, dict[str, str]], Any]], int]]:
    """Start a loopback HTTP server answering `answer(method, path, body, headers)` ->
    (status, document, extra headers); return its port."""
    servers: list[_Server] = []

    def start(answer: Callable[[str, str, bytes, dict[str, str]], Any]) -> int:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, doc, extra = answer(self.command, self.path, body, dict(self.headers))
                raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("Connection", "close")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# A spoofed or hostile dashboard: the admin commands print whatever it answers.


def hostile_worker(worker_id: str = "brave-otter-3f2a") -> dict[str, Any]:
    return {
        "id": worker_id,
        "status": "failed",
        "subdomain": ATTACK,
        "hostname": ATTACK,
        "ip": "127.0.0.1",
        "port": 3000,
        "dns_status": ATTACK,
        "dns_error": ATTACK,
        "version": ATTACK,
        "applied_revision": 1,
        "desired_revision": 2,
        "last_sync": "2026-01-02T03:04:05Z",
        "last_error": ATTACK,
        "consecutive_failures": 3,
        "created_at": "2026-01-01T00:00:00Z",
        "config": {ATTACK: f"{ATTACK}\nsecond line"},
        "stats": {
            ATTACK: ATTACK,
            "cpu_percent": 5.5,
            "disks": [{"mount": ATTACK, "percent": 5, "total": 10}],
            "load_average": [ATTACK],
        },
        "metadata": {ATTACK: ATTACK},
        "history": [
            {
                "at": "2026-01-02T03:04:05Z",
                "previous": "synced",
                "status": "failed",
                "cause": ATTACK,
            }
        ],
    }


def fake_dashboard(method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
    if path.startswith("/infra/workers/auto-register"):
        return 400, {"error": "bad_request", "message": ATTACK}, {}
    if path.startswith("/infra/workers?") or path == "/infra/workers":
        return 200, {"workers": [hostile_worker(), hostile_worker("calm-heron-0b1c")]}, {}
    if path.startswith("/infra/workers/") and path.endswith("/sync"):
        return 409, {"error": "conflict", "message": ATTACK}, {}
    if path.startswith("/infra/workers/"):
        return 200, hostile_worker(), {}
    if path.startswith("/infra/tokens"):
        token = {"id": "tok1", "description": ATTACK, "created_at": "2026-01-01T00:00:00Z"}
        return 200, {"tokens": [token]}, {}
    return 404, {"error": "not_found", "message": "Not Found"}, {}


def admin(url: str, *args: str) -> Any:
    return run_cli(["dashboard", *args, "--url", url], env={**WIDE, "VECTIS_ADMIN_TOKEN": ADMIN})


def test_admin_commands_show_a_hostile_dashboards_answers_as_text(serve: Any) -> None:
    url = f"http://127.0.0.1:{serve(fake_dashboard)}"
    for args in (["workers", "show", "brave-otter-3f2a"], ["workers", "list"], ["tokens", "list"]):
        done = admin(url, *args)
        assert_no_raw(done.stdout, done.stderr)
        assert_shown(done.stdout)
        shown = admin(url, *args, "--json")
        assert_no_raw(shown.stdout, shown.stderr)
        doc = json.loads(shown.stdout)
        if args[1] == "show":
            assert doc == hostile_worker()
        elif args[0] == "workers":
            assert doc["workers"][0] == hostile_worker()
        else:
            assert doc["tokens"][0]["description"] == ATTACK
    show = admin(url, "workers", "show", "brave-otter-3f2a").stdout
    for label in ("hostname:", "version:", "subdomain:", "last error:"):
        line = next(x for x in show.splitlines() if x.startswith(label))
        assert line.endswith(clean(ATTACK)), line


def test_an_error_message_from_the_dashboard_is_cleaned(serve: Any) -> None:
    url = f"http://127.0.0.1:{serve(fake_dashboard)}"
    done = admin(url, "workers", "sync", "brave-otter-3f2a")
    assert done.returncode != 0
    assert_no_raw(done.stdout, done.stderr)
    assert_shown(done.stderr)
    as_json = admin(url, "workers", "sync", "brave-otter-3f2a", "--json")
    assert json.loads(as_json.stdout)["message"] == ATTACK
    assert_no_raw(as_json.stdout, as_json.stderr)


def test_register_and_status_show_a_hostile_refusal_as_text(serve: Any) -> None:
    url = f"http://127.0.0.1:{serve(fake_dashboard)}"
    init = run_cli(["worker", "init", "--dashboard-url", url, "--port", str(free_port())])
    assert init.returncode == 0, init.stderr
    env = {"VECTIS_TOKEN": ENROLL, "VECTIS_PUBLIC_IP": "203.0.113.5"}
    done = run_cli(["register"], env=env)
    assert done.returncode != 0
    assert_no_raw(done.stdout, done.stderr)
    assert_shown(done.stderr)
    # The refusal is kept in worker.conf as the last error: `vectis status` shows it as text.
    status = run_cli(["status"])
    assert_no_raw(status.stdout, status.stderr)
    assert_shown(status.stdout)
    as_json = run_cli(["status", "--json"])
    assert ATTACK in json.loads(as_json.stdout)["error"]


# A tampered worker.conf: `vectis status` prints its fields.


def test_status_shows_a_tampered_worker_conf_as_text() -> None:
    create_secret_file(secret_path())
    with locked_conf() as conf:
        conf.settings.host = "127.0.0.1"
        conf.settings.port = free_port()
        conf.settings.dashboard_url = "http://127.0.0.1:8080"
        conf.state.id = "brave-otter-3f2a"
        conf.state.subdomain = ATTACK
        conf.state.sync = SyncRecord(
            SyncStatus.FAILED, last_sync="2026-01-02T03:04:05Z", last_error=f"{ATTACK}\nforged"
        )
    done = run_cli(["status"])
    assert done.returncode == 11, done.stderr
    assert_no_raw(done.stdout, done.stderr)
    assert_shown(done.stdout)
    error_line = next(x for x in done.stdout.splitlines() if x.startswith("error:"))
    assert error_line.endswith(clean(f"{ATTACK}\nforged"))  # one line: nothing forged
    doc = json.loads(run_cli(["status", "--json"]).stdout)
    assert doc["error"] == f"{ATTACK}\nforged" and doc["subdomain"] == ATTACK


# A real dashboard, and a hostile worker that signs its answers.


class HostileWorker:
    """Answers the dashboard's signed `POST /sync` with `self.answer`, signed correctly."""

    def __init__(self, secret: str) -> None:
        self.key = bytes.fromhex(secret)
        self.worker_id = ""
        self.answer: dict[str, Any] = {}
        self.verifier: RequestVerifier | None = None

    def __call__(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
        if path == "/healthz":
            return 200, {"status": "ok"}, {}
        if self.verifier is None:
            self.verifier = RequestVerifier(
                lambda wid: self.key if wid == self.worker_id else None, start_time=time.time()
            )
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        req = self.verifier.verify(auth, "POST", "/sync", body, now=time.time())
        revision = json.loads(body).get("revision", 0)  # applied as asked: the worker is synced
        doc = {"status": "online", "worker_id": self.worker_id, "applied_revision": revision}
        payload = json.dumps({**doc, **self.answer}).encode()
        sig = sign_response(self.key, self.worker_id, req.nonce, 200, payload, ts=int(time.time()))
        return 200, payload, {SIGNATURE_HEADER: sig}


@pytest.fixture
def real_dashboard(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "VECTIS_ADMIN_TOKEN": ADMIN,
        "VECTIS_TOKEN": ENROLL,
        "VECTIS_SYNC_INTERVAL": "0",
        "VECTIS_SYNC_TIMEOUT": "5",
        "VECTIS_DATA_DIR": str(tmp_path / "data"),
        "VECTIS_WORKER_NETWORKS": "127.0.0.0/8",  # the hostile worker listens on loopback
    }
    args = ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, ready_url=f"{url}/healthz", log=tmp_path / "dashboard.log", env=env):
        yield url


def _register(url: str, port: int, secret: str, hostname: str, version: str) -> tuple[int, Any]:
    body = {"ip": "127.0.0.1", "port": port, "secret": secret}
    body |= {"hostname": hostname, "version": version}
    status, _, raw = http(
        "POST", f"{url}/infra/workers/auto-register", body, {"Authorization": f"Bearer {ENROLL}"}
    )
    return status, json.loads(raw) if raw else None


def test_a_hostile_workers_fields_reach_the_operator_as_text(
    real_dashboard: str, serve: Any, tmp_path: Path
) -> None:
    url = real_dashboard
    secret = secrets.token_hex(32)
    worker = HostileWorker(secret)
    port = serve(worker)
    # Raw escapes in the registration may be refused at the dashboard's edge; markup may not.
    status, doc = _register(url, port, secret, ATTACK, ATTACK[:64])
    escapes_stored = status == 201
    if not escapes_stored:
        assert status == 400, doc
        status, doc = _register(url, port, secret, MARKUP, MARKUP[:64])
    assert status == 201, doc
    worker.worker_id = doc["id"]

    # Config values are the operator's, and may hold line breaks and escapes legitimately.
    config = {"motd": f"{ATTACK}\nsecond line", MARKUP: ESCAPES}
    (tmp_path / "config.json").write_text(json.dumps(config))
    set_config = admin(
        url, "workers", "set-config", worker.worker_id, "--file", str(tmp_path / "config.json")
    )
    assert set_config.returncode == 0, set_config.stderr
    assert_no_raw(set_config.stdout, set_config.stderr)

    # The worker's signed answers: its version, stats and metadata carry the attack. Raw
    # escapes may be refused at the edge (the sync fails, and its cause is shown); markup not.
    def sync_answering(text: str) -> dict[str, Any]:
        worker.answer = {
            "version": text[:64],
            "stats": {text: text, "disks": [{"mount": text, "percent": 5, "total": 10}]},
            "metadata": {text: text},
        }
        sync = admin(url, "workers", "sync", worker.worker_id)
        assert_no_raw(sync.stdout, sync.stderr)
        doc: dict[str, Any] = json.loads(
            admin(url, "workers", "show", worker.worker_id, "--json").stdout
        )
        assert doc["status"] in ("synced", "failed"), doc
        assert doc["status"] == "synced" or doc["last_error"], doc
        return doc

    sync_answering(ATTACK)
    stored = sync_answering(MARKUP)
    assert stored["status"] == "synced", stored
    assert stored["config"] == config and MARKUP in stored["hostname"]
    assert stored["stats"][MARKUP] == MARKUP and stored["metadata"] == {MARKUP: MARKUP}
    show = admin(url, "workers", "show", worker.worker_id)
    assert show.returncode == 0, show.stderr
    assert_shown(show.stdout, escapes=escapes_stored)
    assert clean(json.dumps(config, separators=(",", ":"))) in show.stdout
    for line in show.stdout.splitlines():
        if line.startswith(("hostname:", "version:")):
            assert MARKUP[:20] in line, line

    # A stats key that is all markup, holding an escape: stored, or refused with a cause that
    # may quote the key. Either way `workers list` and `show` print it as text.
    stored = sync_answering(f"{MARKUP}{ESCAPES}")
    listing = admin(url, "workers", "list")
    show = admin(url, "workers", "show", worker.worker_id)
    for done in (listing, show):
        assert done.returncode in (0, 11), done.stderr
        assert_no_raw(done.stdout, done.stderr)
    if stored["last_error"]:
        assert clean(stored["last_error"]) in listing.stdout
        assert clean(stored["last_error"]) in show.stdout
    else:
        assert_shown(show.stdout)

    # A token's description, as the operator's own tool shows it.
    made = admin(url, "tokens", "create", "--description", MARKUP)
    assert made.returncode == 0, made.stderr
    tokens = admin(url, "tokens", "list")
    assert_no_raw(tokens.stdout, tokens.stderr)
    assert_shown(tokens.stdout, escapes=False)
