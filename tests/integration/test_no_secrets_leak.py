"""No secret, token or signature ever shows in a log, an error body or a command's output.

The main flows run with distinctive secrets and tokens, through recording proxies that
collect every signature sent on the wire; then every process's log, every command's output
and every HTTP answer body is searched for all of them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.integration.test_dashboard_support import Dash, dashboard
from tests.support import free_port, http, run_cli, running
from vectis.crypto.secrets import key_from_secret
from vectis.crypto.signing import new_nonce, sign_request

ADMIN = f"admin-{uuid.uuid4().hex}"
ENROLL = f"enroll-{uuid.uuid4().hex}"
BAD_ENROLL = f"bad-enroll-{uuid.uuid4().hex}"
BAD_ADMIN = f"bad-admin-{uuid.uuid4().hex}"


class Recorder:
    """What the proxies saw: Authorization headers and response signatures."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.signatures: list[str] = []
        self.lock = threading.Lock()


@contextmanager
def recording_proxy(target_port: int, recorder: Recorder) -> Iterator[int]:
    """A loopback HTTP proxy to `target_port` that records credentials as they pass."""

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            with recorder.lock:
                if "Authorization" in self.headers:
                    recorder.authorizations.append(self.headers["Authorization"])
            conn = HTTPConnection("127.0.0.1", target_port, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            with recorder.lock:
                if resp.getheader("X-Vectis-Signature"):
                    recorder.signatures.append(resp.getheader("X-Vectis-Signature", ""))
            self.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in ("content-length", "connection", "date", "server"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Capture:
    """Every output of the run, by where it came from."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def cli(self, label: str, args: list[str], env: dict[str, str], code: int | None = 0) -> str:
        done = run_cli(args, env=env)
        self.texts[f"{label} stdout"] = done.stdout
        self.texts[f"{label} stderr"] = done.stderr
        if code is not None:
            assert done.returncode == code, (label, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def http(self, label: str, *args: Any, **kw: Any) -> int:
        status, _, body = http(*args, **kw)
        self.texts[f"{label} body"] = body.decode(errors="replace")
        return status


def test_no_secret_token_or_signature_leaks(tmp_path: Path) -> None:
    cap = Capture()
    to_worker, to_dashboard = Recorder(), Recorder()
    conf_dir = tmp_path / "etc-vectis"
    worker_port = free_port()
    wenv = {
        "VECTIS_CONFIG_DIR": str(conf_dir),
        "VECTIS_IP_DNS_SERVER": "off",
        "VECTIS_PUBLIC_IP": "127.0.0.1",
        "VECTIS_HEARTBEAT_INTERVAL": "3600",
    }
    # Plain HTTP: the recording proxy must read the signed syncs to collect their signatures.
    cap.cli("worker init", ["worker", "init", "--no-tls", "--json"], wenv, code=None)
    secret = (conf_dir / "worker.secret").read_text().strip()
    token_file = tmp_path / "enroll.token"
    token_file.write_text(ENROLL + "\n")
    token_file.chmod(0o600)
    with (
        dashboard(
            tmp_path,
            VECTIS_ADMIN_TOKEN=ADMIN,
            VECTIS_TOKEN=ENROLL,
            VECTIS_SYNC_INTERVAL="1",
        ) as dash,
        running(
            ["worker", "serve", "--host", "127.0.0.1", "--port", str(worker_port)],
            ready_url=f"http://127.0.0.1:{worker_port}/healthz",
            log=tmp_path / "worker.log",
            env=wenv,
        ) as worker_proc,
        recording_proxy(worker_port, to_worker) as worker_proxy,
        recording_proxy(int(dash.url.rsplit(":", 1)[1]), to_dashboard) as dash_proxy,
    ):
        via = f"http://127.0.0.1:{dash_proxy}"
        flags = ["--dashboard-url", via, "--port", str(worker_proxy)]
        register = ["register", "--json", "--token-file", str(token_file), *flags]
        reg = json.loads(cap.cli("register", register, wenv))
        wid = reg["id"]
        cap.cli("sync", ["sync", "--json", *flags], wenv)
        cap.cli("status", ["status", "--json"], wenv, code=None)
        cap.cli("status human", ["status"], wenv, code=None)

        other = tmp_path / "other-worker"
        oenv = {**wenv, "VECTIS_CONFIG_DIR": str(other), "VECTIS_TOKEN": BAD_ENROLL}
        cap.cli("other init", ["worker", "init"], oenv, code=None)
        cap.cli("bad token register", ["register", "--json", *flags], oenv, code=4)
        cap.cli("bad token sync", ["sync", "--json", *flags], oenv, code=None)

        _operator_commands(cap, dash, wid)
        sent = _forgeries(cap, dash, worker_port, wid, secret, worker_proxy)

        # The periodic sweep has reached the worker through the proxy by now.
        deadline = time.monotonic() + 15
        while len(to_worker.signatures) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        cap.cli("status after", ["status", "--json"], wenv, code=None)
    cap.texts["dashboard log"] = dash.proc.output
    cap.texts["worker log"] = worker_proc.output
    cap.texts["worker.conf"] = (conf_dir / "worker.conf").read_text()

    sent_auth = to_worker.authorizations + to_dashboard.authorizations
    signatures = [a.rsplit(".", 1)[1] for a in sent_auth if a.startswith("Bearer v1.")]
    signatures += [s.rsplit(".", 1)[1] for s in to_worker.signatures + to_dashboard.signatures]
    signatures += sent
    assert len(to_worker.authorizations) >= 3, "no signed sync passed the worker's proxy"
    assert len(to_dashboard.signatures) >= 1, "no signed heartbeat answer was seen"
    created = cap.texts.pop("tokens create stdout")
    api_token = json.loads(created)["token"]
    needles = {
        "worker secret": secret,
        "worker secret (upper case)": secret.upper(),
        "admin token": ADMIN,
        "enrollment token": ENROLL,
        "API-made enrollment token": api_token,
        "guessed enrollment token": BAD_ENROLL,
        "guessed admin token": BAD_ADMIN,
        **{f"signature {i}": sig for i, sig in enumerate(signatures)},
    }
    assert len(cap.texts) > 30 and len(signatures) >= 10
    leaks = [
        f"{what} in {where}"
        for where, text in cap.texts.items()
        for what, needle in needles.items()
        if needle in text
    ]
    assert leaks == []


def _operator_commands(cap: Capture, dash: Dash, wid: str) -> None:
    env = {"VECTIS_DASHBOARD_URL": dash.url, "VECTIS_ADMIN_TOKEN": ADMIN}
    for label, args in [
        ("workers list", ["dashboard", "workers", "list", "--json"]),
        ("workers list human", ["dashboard", "workers", "list"]),
        ("workers show", ["dashboard", "workers", "show", wid, "--json"]),
        ("workers show human", ["dashboard", "workers", "show", wid]),
        ("workers sync", ["dashboard", "workers", "sync", wid, "--json"]),
        ("tokens create", ["dashboard", "tokens", "create", "--json", "--max-uses", "1"]),
        ("tokens list", ["dashboard", "tokens", "list", "--json"]),
        ("tokens list human", ["dashboard", "tokens", "list"]),
    ]:
        cap.cli(label, args, env)
    config = '{"note": "leak check"}'
    done = run_cli(["dashboard", "workers", "set-config", wid, "-", "--json"], env, input=config)
    cap.texts["set-config stdout"], cap.texts["set-config stderr"] = done.stdout, done.stderr
    assert done.returncode == 0, done.stderr
    cap.cli("workers sync-all", ["dashboard", "workers", "sync-all", "--json"], env, code=None)
    bad = {**env, "VECTIS_ADMIN_TOKEN": BAD_ADMIN}
    cap.cli("bad admin list", ["dashboard", "workers", "list", "--json"], bad, code=4)
    cap.cli("bad admin show", ["dashboard", "workers", "show", wid], bad, code=4)
    for label, path in [("metrics", "/metrics"), ("workers api", "/infra/workers")]:
        cap.http(label, "GET", dash.url + path, headers={"Authorization": f"Bearer {ADMIN}"})


def _forgeries(
    cap: Capture, dash: Dash, worker_port: int, wid: str, secret: str, held_port: int
) -> list[str]:
    """Bad signatures, bad tokens and bad bodies against both daemons; their answers kept."""
    key = key_from_secret(secret)
    other_key = bytes(range(32))
    body = json.dumps({"ip": "127.0.0.1", "version": "0", "port": 1, "applied_revision": 0})
    path = f"/infra/workers/{wid}/heartbeat"
    ts = int(time.time())
    forged = sign_request(other_key, wid, "POST", path, body.encode(), ts=ts,
                          nonce=new_nonce(lambda n: b"\x01" * n))  # fmt: skip
    wrong_body = sign_request(key, wid, "POST", path, b"{}", ts=ts, nonce=new_nonce(bytes))
    for label, header in [("forged heartbeat", forged), ("wrong body", wrong_body)]:
        status = cap.http(label, "POST", dash.url + path, body.encode(),
                          headers={"Authorization": header})  # fmt: skip
        assert status == 401
    sync_body = b'{"revision": 0, "config": {}}'
    valid = sign_request(key, wid, "POST", "/sync", sync_body, ts=ts,
                         nonce=new_nonce(lambda n: b"\x02" * n))  # fmt: skip
    url = f"http://127.0.0.1:{worker_port}/sync"
    assert cap.http("sync", "POST", url, sync_body, headers={"Authorization": valid}) == 200
    assert cap.http("replay", "POST", url, sync_body, headers={"Authorization": valid}) == 401
    tampered = valid[:-2] + ("AA" if not valid.endswith("AA") else "BA")
    assert cap.http("tampered", "POST", url, sync_body, headers={"Authorization": tampered}) == 401
    reg = dash.url + "/infra/workers/auto-register"
    for label, payload, token in [
        ("bad ip", {"ip": "0.0.0.0", "secret": secret}, ENROLL),
        ("bad secret", {"ip": "127.0.0.1", "secret": secret + "zz"}, ENROLL),
        (
            "conflict",
            {"ip": "127.0.0.1", "secret": secrets.token_hex(32), "port": held_port},
            ENROLL,
        ),
        ("bad token", {"ip": "127.0.0.1", "secret": secret}, BAD_ENROLL),
    ]:
        cap.http(label, "POST", reg, payload, headers={"Authorization": f"Bearer {token}"})
    cap.http("login", "POST", dash.url + "/login", {"token": BAD_ADMIN})
    return [h.rsplit(".", 1)[1] for h in (forged, wrong_body, valid, tampered)]
