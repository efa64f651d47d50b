"""Small leaks, probed against real processes: what a parser error, an `Expect`, a logout, a
degenerate secret or a query string could give away or let through."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_dashboard_support import ADMIN, ENROLL, Dash, dashboard
from tests.integration.test_worker_daemon import Worker, setup_worker, sync, worker_env
from tests.support import Proc, free_port, http, run_cli, running, until
from vectis.crypto.secrets import generate_secret

SENTINEL = "probe-" + uuid.uuid4().hex


@dataclass
class Daemons:
    dash: Dash
    worker: Worker
    worker_proc: Proc

    @property
    def dash_port(self) -> int:
        return int(self.dash.url.rsplit(":", 1)[1])

    def ports(self) -> dict[str, int]:
        return {"dashboard": self.dash_port, "worker": self.worker.port}


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    base = tmp_path_factory.mktemp("leaks")
    w = setup_worker(base / "etc")
    with (
        dashboard(base) as dash,
        running(
            ["worker", "serve"], ready_url=w.healthz, log=base / "worker.log", env=worker_env(w)
        ) as proc,
    ):
        yield Daemons(dash, w, proc)


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or 5 s of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        got = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                got += chunk
    return got


MALFORMED = {
    "bad method": b"P\x00ST /" + SENTINEL.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "space in a header name": b"GET / HTTP/1.1\r\nHost: x\r\nBad "
    + SENTINEL.encode()
    + b": 1\r\n\r\n",
    "bad content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1"
    + SENTINEL.encode()
    + b"\r\n\r\n",
    "bad version": b"GET /" + SENTINEL.encode() + b" HTTP/7.3\r\nHost: x\r\n\r\n",
    "over-long header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: "
    + b"a" * 9000
    + SENTINEL.encode()
    + b"\r\n\r\n",
    "TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + SENTINEL.encode() + b"\r\n\r\n",
}


@pytest.mark.parametrize("daemon", ["dashboard", "worker"])
@pytest.mark.parametrize("probe", list(MALFORMED))
def test_parser_errors_name_no_software_and_echo_nothing(
    daemons: Daemons, daemon: str, probe: str
) -> None:
    answer = exchange(daemons.ports()[daemon], MALFORMED[probe])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and head.split()[1] == b"400", answer[:300]
    headers = [line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")[1:]]
    assert b"server" not in headers, head
    assert SENTINEL.encode() not in answer and b"aiohttp" not in answer.lower()
    assert b"python" not in answer.lower()
    assert json.loads(body)["error"] == "bad_request"


HUGE = b"Content-Length: 5000000000\r\nExpect: 100-continue\r\n\r\n"


def _dash_heads() -> dict[str, bytes]:
    host = b"Host: x\r\nContent-Type: application/json\r\n"
    admin = b"Authorization: Bearer " + ADMIN.encode() + b"\r\n"
    enroll = b"Authorization: Bearer " + ENROLL.encode() + b"\r\n"
    return {
        "auto-register": b"POST /infra/workers/auto-register HTTP/1.1\r\n" + host + enroll,
        "tokens": b"POST /infra/tokens HTTP/1.1\r\n" + host + admin,
        "login": b"POST /login HTTP/1.1\r\n" + host,
        "config": b"PUT /infra/workers/brave-otter-3f2a/config HTTP/1.1\r\n" + host + admin,
    }


@pytest.mark.parametrize("route", list(_dash_heads()))
def test_dashboard_refuses_an_announced_huge_body_without_100_continue(
    daemons: Daemons, route: str
) -> None:
    answer = exchange(daemons.dash_port, _dash_heads()[route] + HUGE)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"100 Continue" not in answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "too_large"


def test_worker_refuses_an_announced_huge_body_without_100_continue(daemons: Daemons) -> None:
    answer = exchange(daemons.worker.port, b"POST /sync HTTP/1.1\r\nHost: x\r\n" + HUGE)
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer, answer[:200]


def test_a_small_announced_body_is_still_invited(daemons: Daemons) -> None:
    body = json.dumps({"description": "via expect"}).encode()
    head = _dash_heads()["tokens"] + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(
        body
    )
    with socket.create_connection(("127.0.0.1", daemons.dash_port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 201")


def test_logout_needs_the_csrf_header(daemons: Daemons) -> None:
    dash = daemons.dash
    status, headers, raw = http("POST", dash.url + "/login", {"token": ADMIN})
    assert status == 200
    csrf = json.loads(raw)["csrf"]
    jar = {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}
    # A page on another site that makes the browser post to /logout sends no CSRF header.
    status, doc = dash.call("POST", "/logout", token=None, headers=jar)
    assert (status, doc["error"]) == (403, "forbidden")
    wrong = {**jar, "X-Vectis-CSRF": "x" + csrf}
    assert dash.call("POST", "/logout", token=None, headers=wrong)[0] == 403
    assert dash.call("GET", "/session", token=None, headers=jar)[1]["authenticated"] is True
    assert dash.call("GET", "/infra/workers", token=None, headers=jar)[0] == 200
    good = {**jar, "X-Vectis-CSRF": csrf}
    assert dash.call("POST", "/logout", token=None, headers=good)[0] == 200
    assert dash.call("GET", "/session", token=None, headers=jar)[1] == {"authenticated": False}
    # Without a live session there is nothing to protect: logging out again is harmless.
    assert dash.call("POST", "/logout", token=None, headers=jar)[0] == 200


@pytest.mark.parametrize(
    "secret",
    [
        "00" * 32,  # all zero
        "ff" * 16,  # one byte value, the shortest length
        "0123456789abcdef" * 4,  # 8 distinct bytes of 32
        "00" * 60 + generate_secret()[:8],  # 5 distinct bytes of 64
    ],
    ids=["zeros", "one byte", "short pattern", "mostly zeros"],
)
def test_a_degenerate_secret_cannot_register(daemons: Daemons, secret: str) -> None:
    status, doc = daemons.dash.register(secret, free_port())
    assert status == 400 and doc["error"] == "bad_request", doc
    assert "distinct" in doc["message"] and secret not in doc["message"]
    assert daemons.dash.register(generate_secret(), free_port())[0] == 201


def test_the_worker_refuses_to_start_with_a_degenerate_secret(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    (w.conf_dir / "worker.secret").write_text("00" * 32 + "\n")
    for args in (["worker", "serve"], ["worker", "init"]):
        done = run_cli(args, env=worker_env(w), timeout=30)
        assert done.returncode == 3, (args, done)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a random secret" in lines[0], done.stderr
        assert "00" * 32 not in done.stderr


def test_access_logs_keep_no_query_string(daemons: Daemons) -> None:
    dash, w = daemons.dash, daemons.worker
    assert http("GET", f"{dash.url}/healthz?token={SENTINEL}-d")[0] == 200
    assert dash.call("GET", f"/infra/workers?status=synced&key={SENTINEL}-a")[0] == 200
    assert http("GET", f"http://127.0.0.1:{w.port}/sync?token={SENTINEL}-w")[0] == 401
    assert http("GET", f"http://127.0.0.1:{w.port}/healthz?token={SENTINEL}-h")[0] == 200
    dash_log = until(
        lambda: '"GET /infra/workers?..." 200' in dash.proc.output and dash.proc.output,
        "the dashboard's access line",
    )
    assert '"GET /healthz?..." 200' in dash_log
    assert sync(w)[0] == 200  # a line after the probes: the worker has logged them by now
    worker_log = daemons.worker_proc.output
    assert "GET /sync?... 401" in worker_log
    for log in (dash_log, worker_log):
        assert SENTINEL not in log
