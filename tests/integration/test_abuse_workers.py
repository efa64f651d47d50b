"""Attacks by a hostile worker or enrollee on a real dashboard: each written as the attacker would.

The workers here are fake but signed: small HTTP servers in this process that answer `/sync`
with whatever the attack needs, signed with the worker's own secret, so the dashboard trusts
the exchange and must still refuse what the answer holds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from tests.integration.test_dashboard_support import Dash, dashboard
from tests.support import free_port
from vectis.crypto.secrets import key_from_secret
from vectis.crypto.signing import new_nonce, parse_authorization, sign_request, sign_response

Answer = Callable[[str], bytes]  # worker id -> the raw JSON body of its /sync answer


def good_answer(worker_id: str) -> bytes:
    return json.dumps(
        {
            "status": "online",
            "version": "1.0.0",
            "worker_id": worker_id,
            "applied_revision": 0,
            "stats": {"cpu_percent": 1.0},
            "metadata": {"hostname": "web-1", "os": "Linux"},
        }
    ).encode()


class FakeWorker:
    """A signed `/sync` endpoint on a loopback port that answers what `answer` makes."""

    def __init__(self, secret: str, answer: Answer = good_answer) -> None:
        self.secret = secret
        self.answer = answer
        self.worker_id = ""
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                req = parse_authorization(self.headers.get("Authorization"))
                body = outer.answer(req.worker_id)
                sig = sign_response(
                    key_from_secret(outer.secret),
                    req.worker_id,
                    req.nonce,
                    200,
                    body,
                    ts=int(time.time()),
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Vectis-Signature", sig)
                self.end_headers()
                # The dashboard stops reading an answer over its cap and closes the connection.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fake_workers(answers: list[Answer]) -> Iterator[list[FakeWorker]]:
    workers = [FakeWorker(secrets.token_hex(32), a) for a in answers]
    try:
        yield workers
    finally:
        for w in workers:
            w.close()


def enroll(dash: Dash, workers: list[FakeWorker]) -> None:
    for w in workers:
        status, reg = dash.register(w.secret, w.port)
        assert status == 201, reg
        w.worker_id = reg["id"]


def heartbeat(
    port: int, w: FakeWorker, conn: http.client.HTTPConnection | None = None, **body: Any
) -> tuple[int, dict[str, str], dict[str, Any]]:
    raw = json.dumps({"port": w.port, "applied_revision": 0, **body}).encode()
    path = f"/infra/workers/{w.worker_id}/heartbeat"
    auth = sign_request(
        key_from_secret(w.secret),
        w.worker_id,
        "POST",
        path,
        raw,
        ts=int(time.time()),
        nonce=new_nonce(os.urandom),
    )
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body=raw, headers={"Authorization": auth})
    resp = c.getresponse()
    data = resp.read()
    if conn is None:
        c.close()
    return resp.status, dict(resp.headers), json.loads(data)


def dash_port(dash: Dash) -> int:
    return int(dash.url.rsplit(":", 1)[1])


# -- 1: one worker's answer never stops the others' results from being recorded ------------------


def test_a_lone_surrogate_in_one_answer_fails_that_worker_only(tmp_path: Path) -> None:
    def surrogate(worker_id: str) -> bytes:
        # The JSON escape decodes to an unpaired surrogate, which no UTF-8 store can hold.
        return good_answer(worker_id).replace(b'"1.0.0"', b'"\\ud800"')

    answers: list[Answer] = [good_answer, good_answer, surrogate, good_answer, good_answer]
    with fake_workers(answers) as workers, dashboard(tmp_path) as dash:
        enroll(dash, workers)
        status, counts = dash.call("POST", "/infra/workers/sync")
        assert status == 200, counts
        assert counts == {"total": 5, "synced": 4, "failed": 1, "outdated": 0}
        for w in workers:
            doc = dash.worker(w.worker_id)
            if w.answer is surrogate:
                assert doc["status"] == "failed"
                assert doc["last_error"].startswith("bad answer: the answer holds a lone surrogate")
                assert doc["version"] is None
            else:
                assert doc["status"] == "synced" and doc["version"] == "1.0.0", doc
        # The one-worker path answers the worker, not a 500.
        status, doc = dash.call("POST", f"/infra/workers/{workers[2].worker_id}/sync")
        assert status == 200 and doc["status"] == "failed"
        assert "Traceback" not in dash.proc.output


def test_lone_surrogates_and_control_characters_in_requests_are_400(tmp_path: Path) -> None:
    with fake_workers([good_answer]) as workers, dashboard(tmp_path) as dash:
        enroll(dash, workers)
        w = workers[0]
        port = dash_port(dash)
        bad_texts = ["\ud800", "\x1b]0;owned\x07", "\x1b[2J", "a\u202eb"]
        for text in bad_texts:
            for field in ("hostname", "version"):
                status, doc = dash.register(secrets.token_hex(32), free_port(), **{field: text})
                assert status == 400 and field in doc["message"], (field, text, doc)
            status, _, doc = heartbeat(port, w, version=text)
            assert status == 400, doc
            status, doc = dash.call("POST", "/infra/tokens", {"description": text})
            assert status == 400 and "description" in doc["message"], doc
        # A config may hold control characters (a PEM, a multi-line file) but never a surrogate.
        status, doc = dash.call("PUT", f"/infra/workers/{w.worker_id}/config", {"pem": "a\nb\tc"})
        assert status == 200, doc
        raw = b'{"key": "\\udc00"}'
        status, doc = dash.call("PUT", f"/infra/workers/{w.worker_id}/config", raw)
        assert status == 400 and "lone surrogate" in doc["message"], doc
        # Login with a surrogate: a 401 (a bad login is never told apart), never a 500.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/login", body=b'{"token": "\\ud800"}')
        assert conn.getresponse().status == 401
        conn.close()
        assert "Traceback" not in dash.proc.output


# -- 2: per-worker budgets -------------------------------------------------------------------------


def test_a_heartbeat_flood_from_one_worker_never_refuses_another(tmp_path: Path) -> None:
    # The scenario as reported: a 500-nonce store, 600 valid heartbeats from one worker.
    with (
        fake_workers([good_answer, good_answer]) as workers,
        dashboard(tmp_path, VECTIS_NONCE_CAPACITY="500") as dash,
    ):
        enroll(dash, workers)
        flooder, other = workers
        port = dash_port(dash)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        codes: list[int] = []
        for i in range(600):
            status, headers, doc = heartbeat(port, flooder, conn)
            codes.append(status)
            if status == 429:
                assert int(headers["Retry-After"]) >= 1 and "retry in" in doc["message"]
            if i % 50 == 0:
                assert heartbeat(port, other)[0] == 200
        conn.close()
        assert codes[:30] == [200] * 30  # the default budget: 30 signed calls a minute
        assert set(codes[30:]) == {429}, set(codes[30:])
        assert all(heartbeat(port, other)[0] == 200 for _ in range(10))


def test_the_nonce_share_bounds_one_worker_even_with_a_generous_budget(tmp_path: Path) -> None:
    with (
        fake_workers([good_answer, good_answer]) as workers,
        dashboard(
            tmp_path, VECTIS_NONCE_CAPACITY="500", VECTIS_WORKER_CALLS_PER_MINUTE="100000"
        ) as dash,
    ):
        enroll(dash, workers)
        flooder, other = workers
        port = dash_port(dash)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        codes = [heartbeat(port, flooder, conn)[0] for _ in range(600)]
        conn.close()
        assert codes[:250] == [200] * 250 and set(codes[250:]) == {429}  # half the store
        assert all(heartbeat(port, other)[0] == 200 for _ in range(20))


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_a_megabyte_of_stats_is_refused_and_never_stored(tmp_path: Path) -> None:
    def huge(worker_id: str) -> bytes:
        doc = json.loads(good_answer(worker_id))
        doc["stats"] = {"junk": "x" * (1024 * 1024)}
        return json.dumps(doc).encode()

    def over_budget(worker_id: str) -> bytes:
        doc = json.loads(good_answer(worker_id))
        doc["metadata"] = {"junk": "x" * 20_000}  # fits the answer's cap, not the 16 KiB budget
        return json.dumps(doc).encode()

    answers: list[Answer] = [huge] * 20 + [over_budget, good_answer]
    with fake_workers(answers) as workers, dashboard(tmp_path) as dash:
        enroll(dash, workers)
        before = _rss(dash.proc.popen.pid)
        status, counts = dash.call("POST", "/infra/workers/sync")
        assert status == 200 and counts["synced"] == 1 and counts["failed"] == 21, counts
        grown = _rss(dash.proc.popen.pid) - before
        for w in workers[:20]:
            doc = dash.worker(w.worker_id)
            assert doc["last_error"].startswith("bad answer: larger than"), doc["last_error"]
            assert doc["stats"] is None
        doc = dash.worker(workers[20].worker_id)
        assert doc["last_error"] == "bad answer: 'metadata' is larger than 16384 bytes"
        assert doc["metadata"] is None
        status, listing = dash.call("GET", "/infra/workers")
        assert status == 200 and len(json.dumps(listing)) < 40_000
        assert grown < 20 * 1024 * 1024, f"the dashboard grew by {grown} bytes"


# -- 3: the dashboard reaches only the networks it is told to --------------------------------------

TARGETS = ["169.254.169.254", "127.0.0.1", "10.0.0.5", "::ffff:169.254.169.254"]


def test_private_and_special_addresses_are_refused_by_default(tmp_path: Path) -> None:
    with dashboard(tmp_path, VECTIS_WORKER_NETWORKS="") as dash:
        for ip in TARGETS:
            status, doc = dash.register(secrets.token_hex(32), free_port(), ip=ip)
            assert status == 400, (ip, doc)
            assert "not a public address and not in VECTIS_WORKER_NETWORKS" in doc["message"]
        status, doc = dash.call("GET", "/infra/workers")
        assert doc["workers"] == []


def test_allowed_networks_admit_them_and_are_checked_again_at_heartbeat_and_sync(
    tmp_path: Path,
) -> None:
    nets = "169.254.0.0/16,127.0.0.0/8,10.0.0.0/8"
    with dashboard(tmp_path, VECTIS_WORKER_NETWORKS=nets) as dash:
        for ip in TARGETS:
            status, doc = dash.register(secrets.token_hex(32), free_port(), ip=ip)
            assert status == 201, (ip, doc)
            assert doc["ip"] == ip.removeprefix("::ffff:")
    with fake_workers([good_answer]) as workers:
        w = workers[0]
        with dashboard(tmp_path, name="d2", VECTIS_WORKER_NETWORKS="127.0.0.0/8") as dash:
            enroll(dash, workers)
            port = dash_port(dash)
            status, _, doc = heartbeat(port, w, ip="169.254.169.254")
            assert status == 400 and "169.254.169.254 is not a public address" in doc["message"]
            status, _, doc = heartbeat(port, w, ip="::ffff:10.0.0.5")
            assert status == 400, doc
            assert dash.worker(w.worker_id)["ip"] == "127.0.0.1"
            assert dash.sync(w.worker_id)["status"] == "synced"
        # The same registry under a dashboard no longer told of loopback: no connection at all.
        calls = w.calls
        with dashboard(tmp_path, name="d3", VECTIS_WORKER_NETWORKS="10.0.0.0/8") as dash:
            doc = dash.sync(w.worker_id)
            assert doc["status"] == "failed"
            assert doc["last_error"].startswith("refused: 127.0.0.1 is not a public address")
            assert w.calls == calls


@contextmanager
def odd_ports() -> Iterator[dict[str, int]]:
    """Ports that answer as other hosts' services would: closed, hanging, HTTP, a banner."""
    stop = threading.Event()
    hanging = socket.create_server(("127.0.0.1", 0))
    banner = socket.create_server(("127.0.0.1", 0))
    web = socket.create_server(("127.0.0.1", 0))

    def serve(sock: socket.socket, reply: bytes | None) -> None:
        sock.settimeout(0.1)
        held: list[socket.socket] = []
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            if reply is None:
                held.append(conn)  # accept, then never answer
            else:
                conn.sendall(reply)
                conn.close()
        for conn in held:
            conn.close()

    replies = {
        hanging: None,
        banner: b"SSH-2.0-OpenSSH_9.2\r\n",
        web: b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nServer: nginx\r\n\r\nnot found",
    }
    threads = [threading.Thread(target=serve, args=(s, r), daemon=True) for s, r in replies.items()]
    for t in threads:
        t.start()
    try:
        yield {
            "closed": free_port(),
            "hanging": hanging.getsockname()[1],
            "banner": banner.getsockname()[1],
            "http": web.getsockname()[1],
        }
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in replies:
            s.close()


def test_sync_errors_do_not_tell_other_hosts_ports_apart(tmp_path: Path) -> None:
    with odd_ports() as ports, dashboard(tmp_path, VECTIS_SYNC_TIMEOUT="1") as dash:
        errors = {}
        for kind, port in ports.items():
            status, reg = dash.register(secrets.token_hex(32), port)
            assert status == 201, reg
            doc = dash.sync(reg["id"])
            assert doc["status"] == "failed"
            errors[kind] = re.sub(r":\d+ ", ":PORT ", doc["last_error"])
        # A closed port reads as a hanging one; an HTTP server as a banner.
        assert errors["closed"] == errors["hanging"], errors
        assert errors["http"] == errors["banner"], errors
        assert errors["closed"] == "unreachable: no answer from 127.0.0.1:PORT within 1 s"
        assert errors["http"] == (
            "identity mismatch: 127.0.0.1:PORT gave no answer signed by this worker"
        )
        assert "SSH" not in json.dumps(dash.call("GET", "/infra/workers")[1])


# -- 7: squatting ----------------------------------------------------------------------------------


def test_a_conflicting_address_names_no_other_worker(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        port = free_port()
        status, first = dash.register(secrets.token_hex(32), port)
        assert status == 201
        status, doc = dash.register(secrets.token_hex(32), port)
        assert status == 409
        assert first["id"] not in json.dumps(doc) and first["subdomain"] not in json.dumps(doc)
        # A token limited in uses stops a squatter after its uses.
        status, token = dash.call("POST", "/infra/tokens", {"max_uses": 2})
        assert status == 201
        codes = [
            dash.register(secrets.token_hex(32), free_port(), token=token["token"])[0]
            for _ in range(4)
        ]
        assert codes[:2] == [201, 201] and set(codes[2:]) == {401}
