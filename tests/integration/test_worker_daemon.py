"""`vectis worker serve` as a real process: signed /sync, and every forged request gets 401.

One registered worker serves the whole battery of adversarial requests; after each one the
test checks that it still answers /healthz and a fresh valid sync.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import Proc, free_port, running
from vectis.configfile import locked_conf, read_conf
from vectis.crypto.secrets import create_secret_file, generate_secret, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, new_nonce, sign_request, verify_response

WID = "brave-otter-3f2a"
UNAUTHORIZED = {"error": "unauthorized"}


@dataclass
class Worker:
    port: int
    key: bytes
    conf_dir: Path
    proc: Proc | None = None

    @property
    def conf_file(self) -> Path:
        return self.conf_dir / "worker.conf"

    @property
    def healthz(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"


def setup_worker(conf_dir: Path, *, registered: bool = True, **settings: Any) -> Worker:
    """A secret and a worker.conf listening on a free loopback port (registered or not)."""
    create_secret_file(conf_dir / "worker.secret")
    port = free_port()
    with locked_conf(conf_dir / "worker.conf") as conf:
        conf.settings.host = "127.0.0.1"
        conf.settings.port = port
        for name, value in settings.items():
            setattr(conf.settings, name, value)
        if registered:
            conf.state.id = WID
            conf.state.ip = "127.0.0.1"
            conf.state.reported_port = port
    secret = (conf_dir / "worker.secret").read_text().strip()
    return Worker(port, key_from_secret(secret), conf_dir)


def worker_env(worker: Worker, **extra: str) -> dict[str, str]:
    return {"VECTIS_CONFIG_DIR": str(worker.conf_dir), **extra}


def body_of(revision: int = 0, config: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"revision": revision, "config": config or {}}).encode()


def auth(
    key: bytes,
    body: bytes,
    *,
    wid: str = WID,
    ts: int | None = None,
    nonce: str | None = None,
    method: str = "POST",
    path: str = "/sync",
) -> tuple[str, str]:
    """(Authorization header, nonce) of a request signed as in docs/protocol.md#signed-requests."""
    nonce = nonce or new_nonce(os.urandom)
    ts = int(time.time()) if ts is None else ts
    return sign_request(key, wid, method, path, body, ts=ts, nonce=nonce), nonce


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client, which sends the path exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def raw(port: int, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes, return (status, body) of the answer (read by its Content-Length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # The server may answer and close before a refused body is all sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        status, _, body = _read_answer(sock)
    return int(status.split()[1]), body


def sync(w: Worker, body: bytes | None = None, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """A valid signed sync; checks the response signature when it is a 200."""
    body = body_of() if body is None else body
    header, nonce = auth(w.key, body, **kw)
    status, headers, answer = call(w.port, "POST", "/sync", body, {"Authorization": header})
    if status == 200:
        verify_response(w.key, WID, nonce, 200, answer, headers.get(SIGNATURE_HEADER))
    return status, headers, answer


def assert_unauthorized(status: int, answer: bytes) -> None:
    assert status == 401
    assert json.loads(answer) == UNAUTHORIZED


def assert_serving(w: Worker) -> None:
    """Still alive: /healthz answers and a fresh valid sync passes."""
    status, _, answer = call(w.port, "GET", "/healthz")
    assert (status, json.loads(answer)) == (200, {"status": "ok"})
    status, _, answer = sync(w)
    assert status == 200, answer


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    base = tmp_path_factory.mktemp("worker")
    w = setup_worker(base / "etc")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("VECTIS_"):
                mp.delenv(name)
        env = worker_env(w, VECTIS_DATA_DIR=str(base / "data"))
        with running(["worker", "serve"], ready_url=w.healthz, log=base / "w.log", env=env) as p:
            w.proc = p
            yield w


def test_valid_sync_answers_signed_status(worker: Worker) -> None:
    body = body_of(0)
    header, nonce = auth(worker.key, body)
    status, headers, answer = call(worker.port, "POST", "/sync", body, {"Authorization": header})
    assert status == 200
    assert verify_response(worker.key, WID, nonce, 200, answer, headers[SIGNATURE_HEADER])
    doc = json.loads(answer)
    assert doc["status"] == "online"
    assert doc["worker_id"] == WID
    assert doc["version"] == doc["metadata"]["vectis"]
    assert isinstance(doc["applied_revision"], int)
    stats = doc["stats"]
    assert 0 <= stats["cpu_percent"] <= 100
    assert stats["memory"]["total"] > 0 and stats["process_count"] > 0
    assert stats["disks"][0]["mount"] == "/" and stats["disks"][0]["total"] > 0
    assert len(stats["load_average"]) == 3 and stats["uptime"] > 0
    for key in ("hostname", "os", "kernel", "arch", "python", "uptime"):
        assert doc["metadata"][key]
    # A response signature is bound to the request's nonce: another nonce does not verify.
    with pytest.raises(Exception, match="does not match"):
        verify_response(worker.key, WID, "A" * 22, 200, answer, headers[SIGNATURE_HEADER])


def test_newer_revision_is_applied_and_persisted(worker: Worker) -> None:
    config = {"role": "edge", "limits": {"rps": 50}, "tags": ["a", "b"]}
    status, _, answer = sync(worker, body_of(7, config))
    assert status == 200 and json.loads(answer)["applied_revision"] == 7
    conf = read_conf(worker.conf_file)
    assert conf.state.applied_revision == 7 and conf.config == config
    assert conf.state.sync.status.value == "synced" and conf.state.sync.last_sync
    # An older or equal revision changes nothing and reports the applied one.
    status, _, answer = sync(worker, body_of(3, {"role": "old"}))
    assert status == 200 and json.loads(answer)["applied_revision"] == 7
    assert read_conf(worker.conf_file).config == config


def test_bad_json_after_a_valid_signature_is_400(worker: Worker) -> None:
    for body in (b"{not json", b"[1]", b'{"revision": "7", "config": {}}', b'{"revision": 1}',
                 b'{"revision": -1, "config": {}}', b'{"revision": 1, "config": {"a": null}}',
                 b'{"revision": 1, "config": {"a": NaN}}', b"\xff\xfe"):  # fmt: skip
        header, _ = auth(worker.key, body)
        status, _, answer = call(worker.port, "POST", "/sync", body, {"Authorization": header})
        assert status == 400, body
        doc = json.loads(answer)
        assert doc["error"] == "bad_request" and doc["message"]
    assert_serving(worker)


def test_replay_is_rejected(worker: Worker) -> None:
    body = body_of()
    header, _ = auth(worker.key, body)
    assert call(worker.port, "POST", "/sync", body, {"Authorization": header})[0] == 200
    status, _, answer = call(worker.port, "POST", "/sync", body, {"Authorization": header})
    assert_unauthorized(status, answer)
    assert_serving(worker)


def _noncanonical(sig: str) -> str:
    # 43 base64url chars carry 258 bits for 256: the last char's two low bits are padding.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]


def _forgeries(w: Worker) -> list[tuple[str, str, str, bytes, str]]:
    """(name, method, path, body, Authorization): each must answer 401."""
    body = body_of()
    good, _ = auth(w.key, body)
    head, sig = good.rsplit(".", 1)
    signed_ts = int(head.split(".")[2])
    now = int(time.time())

    def exact(method: str, path: str, data: bytes = body) -> str:
        # Signed over exactly what is sent: only the route can refuse it.
        return auth(w.key, data, method=method, path=path)[0]

    other_key = key_from_secret(generate_secret())
    reserialized = json.dumps(json.loads(body), indent=1).encode()
    return [
        ("changed body byte", "POST", "/sync", body.replace(b"0", b"1"), good),
        ("re-serialized json", "POST", "/sync", reserialized, auth(w.key, body)[0]),
        ("wrong method", "PUT", "/sync", body, exact("PUT", "/sync")),
        ("signed as GET", "POST", "/sync", body, exact("GET", "/sync")),
        ("query string", "POST", "/sync?x=1", body, exact("POST", "/sync?x=1")),
        ("query string, /sync signed", "POST", "/sync?x=1", body, auth(w.key, body)[0]),
        ("trailing slash", "POST", "/sync/", body, exact("POST", "/sync/")),
        ("double slash", "POST", "//sync", body, exact("POST", "//sync")),
        ("percent-encoded", "POST", "/%73ync", body, exact("POST", "/%73ync")),
        ("truncated sig", "POST", "/sync", body, f"{head}.{sig[:-1]}"),
        ("extended sig", "POST", "/sync", body, f"{head}.{sig}A"),
        ("empty sig", "POST", "/sync", body, f"{head}."),
        ("non-canonical sig", "POST", "/sync", body, f"{head}.{_noncanonical(sig)}"),
        ("no authorization", "POST", "/sync", body, ""),
        ("not bearer", "POST", "/sync", body, good.replace("Bearer", "Basic")),
        ("unknown worker", "POST", "/sync", body, auth(w.key, body, wid="other-otter-0000")[0]),
        ("another secret", "POST", "/sync", body, auth(other_key, body)[0]),
        ("ts -301", "POST", "/sync", body, auth(w.key, body, ts=now - 301)[0]),
        ("ts changed", "POST", "/sync", body, good.replace(f".{signed_ts}.", f".{signed_ts - 1}.")),
        ("get sync", "GET", "/sync", b"", exact("GET", "/sync", b"")),
        ("head healthz", "HEAD", "/healthz", b"", ""),
        ("post healthz", "POST", "/healthz", b"", exact("POST", "/healthz", b"")),
        ("root", "GET", "/", b"", ""),
        ("metrics", "GET", "/metrics", b"", ""),
    ]


def test_every_forgery_answers_the_same_401(worker: Worker) -> None:
    for name, method, path, data, header in _forgeries(worker):
        headers = {"Authorization": header} if header else {}
        status, _, answer = call(worker.port, method, path, data, headers)
        assert status == 401, name
        if method != "HEAD":
            assert answer == b'{"error":"unauthorized"}', name
        assert_serving(worker)


def test_non_ascii_signature_over_raw_socket(worker: Worker) -> None:
    body = body_of()
    good, _ = auth(worker.key, body)
    forged = good[:-2].encode() + "é".encode()
    request = (
        b"POST /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAuthorization: " + forged + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    status, answer = raw(worker.port, request)
    assert_unauthorized(status, answer)
    latin1 = good[:-1].encode() + b"\xff"
    status, answer = raw(worker.port, request.replace(forged, latin1))
    assert_unauthorized(status, answer)
    assert_serving(worker)


def _wait_for_second_start() -> None:
    # The +-300 boundary is in whole seconds of the receiver's clock: send early in a second
    # so the request is checked within the same second it was signed.
    while time.time() % 1 > 0.5:
        time.sleep(0.01)


def test_skew_boundary_and_future_nonce(worker: Worker) -> None:
    _wait_for_second_start()
    assert sync(worker, ts=int(time.time()) + 300)[0] == 200
    _wait_for_second_start()
    now = int(time.time())
    status, _, answer = sync(worker, ts=now + 301)
    assert_unauthorized(status, answer)
    # A future ts: its nonce is remembered until ts + 301, so a replay stays refused.
    body = body_of()
    header, _ = auth(worker.key, body, ts=now + 250)
    assert call(worker.port, "POST", "/sync", body, {"Authorization": header})[0] == 200
    status, _, answer = call(worker.port, "POST", "/sync", body, {"Authorization": header})
    assert_unauthorized(status, answer)
    assert_serving(worker)


def test_oversized_body_is_413(worker: Worker) -> None:
    big = 2 * 1024 * 1024
    head = (
        b"POST /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Length: " + str(big).encode() + b"\r\n\r\n"
    )
    # Declared too large: refused before the body is read (only 1 KiB of it is sent).
    status, answer = raw(worker.port, head + b"x" * 1024)
    assert status == 413 and json.loads(answer)["error"] == "too_large"
    # Chunked, with no length announced: refused once the cap is passed while reading.
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(20))
    chunked = (
        b"POST /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    status, answer = raw(worker.port, chunked)
    assert status == 413 and json.loads(answer)["error"] == "too_large"
    # Just under the cap and signed: accepted.
    body = b'{"revision": 0, "config": {"pad": "' + b"y" * (1024 * 1024 - 100) + b'"}}'
    assert len(body) <= 1024 * 1024
    status, _, _ = sync(worker, body)
    assert status == 200
    assert_serving(worker)


def test_healthz_reveals_nothing(worker: Worker) -> None:
    status, headers, answer = call(worker.port, "GET", "/healthz")
    assert (status, answer) == (200, b'{"status":"ok"}')
    assert SIGNATURE_HEADER not in headers


def test_log_has_one_line_per_request_and_no_secret(worker: Worker) -> None:
    body = body_of()
    header, _ = auth(worker.key, body, wid="other-otter-0000")
    call(worker.port, "POST", "/sync", body, {"Authorization": header})
    assert sync(worker)[0] == 200
    assert worker.proc is not None
    deadline = time.monotonic() + 5
    while "POST /sync 200" not in worker.proc.output and time.monotonic() < deadline:
        time.sleep(0.02)
    out = worker.proc.output
    assert "POST /sync 401 worker=brave-otter-3f2a reason=unknown worker id" in out
    assert f"POST /sync 200 worker={WID}" in out
    secret = (worker.conf_dir / "worker.secret").read_text().strip()
    assert secret not in out
    sig = header.rsplit(".", 1)[1]
    assert sig not in out and "Bearer" not in out


def _read_answer(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers by lowercase name, body) of one answer, read by its
    Content-Length."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {got!r}"
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the answer"
        body += chunk
    return status, headers, body


def _answer_of(sock: socket.socket) -> tuple[str, dict[str, str], bytes, bool]:
    """(status line, headers, body, whether the server then closed) of one answer."""
    status, headers, body = _read_answer(sock)
    sock.settimeout(0.5)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return status, headers, body, closed


@pytest.mark.parametrize(
    ("version", "connection", "kept", "says"),
    [
        ("1.1", None, True, None),
        ("1.1", "close", False, "close"),
        ("1.0", None, False, None),
        ("1.0", "keep-alive", True, "keep-alive"),
    ],
)
def test_signed_answer_keeps_or_closes_the_connection_as_http_says(
    worker: Worker, version: str, connection: str | None, kept: bool, says: str | None
) -> None:
    body = body_of()
    header, nonce = auth(worker.key, body)
    extra = f"Connection: {connection}\r\n" if connection else ""
    request = (
        f"POST /sync HTTP/{version}\r\nHost: x\r\nAuthorization: {header}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall(request)
        status, headers, answer, closed = _answer_of(sock)
    assert status == f"HTTP/{version} 200 OK"
    verify_response(worker.key, WID, nonce, 200, answer, headers.get(SIGNATURE_HEADER.lower()))
    assert headers["content-type"] == "application/json" and "date" in headers
    assert "server" not in headers
    assert headers.get("connection") == says
    assert closed is not kept
