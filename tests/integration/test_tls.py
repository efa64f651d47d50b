"""Issue 18 end to end: pinned TLS between the dashboard and its workers, real processes.

A worker with a TLS key registers (its pin in the body) and is synced over TLS, seen on the
wire through a relay; another process with another key (and even the same secret) on the
same address is an identity mismatch; a plain worker keeps working until the dashboard
requires TLS.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.integration.test_dashboard_support import dashboard, worker_daemon, worker_host
from tests.support import free_port, run_cli, until
from vectis.configfile import TLS_NAME, locked_conf, read_conf
from vectis.worker.tls import create_tls_file


class Relay:
    """A TCP relay on a loopback port that keeps every byte it carries, each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.to_worker = bytearray()
        self.to_dashboard = bytearray()
        self.answers: list[bytearray] = []  # what the worker sent, one per connection
        self.connections = 0
        self._lock = threading.Lock()

    def _passes(self, kept: bytearray) -> bool:
        """Whether a chunk read toward `kept`'s side is carried on; if not, both ends close."""
        return True

    def _pipe(
        self, src: socket.socket, dst: socket.socket, kept: bytearray, own: bytearray
    ) -> None:
        try:
            while chunk := src.recv(65536):
                if not self._passes(kept):
                    break
                with self._lock:
                    kept += chunk
                    own += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            answer = bytearray()
            self.answers.append(answer)
            for src, dst, kept, own in (
                (client, upstream, self.to_worker, bytearray()),
                (upstream, client, self.to_dashboard, answer),
            ):
                threading.Thread(target=self._pipe, args=(src, dst, kept, own), daemon=True).start()

    @contextmanager
    def running(self) -> Iterator[Relay]:
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.sock.close()


def server_hello_extensions(data: bytes) -> set[int]:
    """The extension types of the TLS ServerHello that `data` (a server's bytes) starts with.

    The ServerHello is sent in clear in TLS 1.3 too; it carries `pre_shared_key` (41) exactly
    when the server accepted the client's offer to resume a session (RFC 8446, 4.2.11).
    """
    assert data[0] == 22, "not a handshake record"
    body = data[5 : 5 + int.from_bytes(data[3:5], "big")]
    assert body[0] == 2, "not a ServerHello"
    pos = 4 + 2 + 32  # handshake header, legacy_version, random
    pos += 1 + body[pos] + 2 + 1  # legacy_session_id_echo, cipher_suite, compression
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    found = set()
    while pos < end:
        found.add(int.from_bytes(body[pos : pos + 2], "big"))
        pos += 4 + int.from_bytes(body[pos + 2 : pos + 4], "big")
    return found


PRE_SHARED_KEY = 41


def test_a_tls_worker_registers_and_syncs_over_tls_seen_on_the_wire(tmp_path: Path) -> None:
    # No kept connection: the second sync makes a new one, which resumes the first session.
    with dashboard(tmp_path, VECTIS_SYNC_KEEPALIVE="0") as dash:
        host = worker_host(tmp_path / "w1", tls=True)
        pin = host.tls_pin
        assert pin is not None
        # The real worker flow: `vectis register` carries the pin in its body.
        done = run_cli(
            ["register", "--json", "--dashboard-url", dash.url, "--ip", "127.0.0.1"],
            env=host.env(VECTIS_TOKEN="enroll-token-for-tests-0123456789abcdef"),
        )
        assert done.returncode == 0, done.stderr
        status, workers = dash.call("GET", "/infra/workers")
        (shown,) = workers["workers"]
        assert shown["tls_pin"] == pin
        wid = shown["id"]
        relay = Relay(host.port)
        # No heartbeat from the daemon: it would report the direct port, around the relay.
        with locked_conf(host.conf_dir / "worker.conf") as conf:
            conf.settings.dashboard_url = None
        with worker_daemon(host, tmp_path / "w1.log"), relay.running():
            # The worker's record points at the relay, which passes every byte on to it.
            status, _ = dash.register(host.secret, relay.port, tls_pin=pin)
            assert status == 200
            doc = dash.sync(wid)
            assert doc["status"] == "synced", doc
            assert doc["last_error"] is None and doc["tls_pin"] == pin
            assert dash.sync(wid)["status"] == "synced"
        assert relay.connections == 2
        sent, answered = bytes(relay.to_worker), bytes(relay.to_dashboard)
        # A TLS record of type handshake (22), version 3.x: a ClientHello, not an HTTP request.
        assert sent[:2] == b"\x16\x03" and answered[:2] == b"\x16\x03", (sent[:16], answered[:16])
        for clear in (b"POST", b"/sync", b"Authorization", b"revision", b"HTTP/1.1"):
            assert clear not in sent, clear
        for clear in (b"HTTP/1.1", b"online", b"applied_revision", b"worker_id"):
            assert clear not in answered, clear
        # The dashboard resumed the first session for the second sync (no certificate again).
        first, second = (server_hello_extensions(bytes(a)) for a in relay.answers)
        assert PRE_SHARED_KEY not in first and PRE_SHARED_KEY in second, (first, second)


def test_another_key_on_the_same_address_is_an_identity_mismatch(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        host = worker_host(tmp_path / "w1", tls=True)
        status, reg = dash.register(host.secret, host.port, tls_pin=host.tls_pin)
        assert status == 201, reg
        wid = reg["id"]
        host.enroll(wid, reg["subdomain"])
        with worker_daemon(host, tmp_path / "w1.log"):
            assert dash.sync(wid)["status"] == "synced"
        # The impostor holds the worker's secret, id and port (a copied config dir): only its
        # TLS key differs. Its signed answer would verify; the key does not.
        impostor_dir = tmp_path / "impostor"
        shutil.copytree(host.conf_dir, impostor_dir)
        (impostor_dir / TLS_NAME).unlink()
        create_tls_file(impostor_dir / TLS_NAME)
        impostor = worker_host(impostor_dir, port=host.port)
        assert impostor.tls_pin not in (None, host.tls_pin)
        status, doc = dash.call("PUT", f"/infra/workers/{wid}/config", {"token": "s3cr3t"})
        assert status == 200 and doc["desired_revision"] == 1
        with worker_daemon(impostor, tmp_path / "impostor.log"):
            doc = dash.sync(wid)
            assert doc["status"] == "failed", doc
            assert doc["last_error"].startswith("identity mismatch"), doc["last_error"]
            assert "TLS key" in doc["last_error"]
        # It never got the config (which a request it could verify would have carried): the
        # dashboard stopped at the handshake.
        impostor_conf = read_conf(impostor_dir / "worker.conf")
        assert impostor_conf.state.applied_revision == 0 and impostor_conf.config == {}
        # A plain-HTTP process on the address is no better.
        plain = worker_host(tmp_path / "plain", port=host.port)
        plain.enroll(wid, reg["subdomain"])
        with worker_daemon(plain, tmp_path / "plain.log"):
            doc = dash.sync(wid)
        assert doc["status"] == "failed" and doc["last_error"].startswith("identity mismatch")
        # The real worker back: synced again.
        with worker_daemon(host, tmp_path / "w1-again.log"):
            doc = dash.sync(wid)
            assert doc["status"] == "synced" and doc["applied_revision"] == 1


def test_a_plain_worker_keeps_working_until_the_dashboard_requires_tls(tmp_path: Path) -> None:
    dash_port = free_port()
    host = worker_host(tmp_path / "w1")
    with dashboard(tmp_path, port=dash_port) as dash:
        status, reg = dash.register(host.secret, host.port)
        assert status == 201, reg
        wid = reg["id"]
        host.enroll(wid, reg["subdomain"], dashboard_url=dash.url)
        with worker_daemon(host, tmp_path / "w1.log"):
            doc = dash.sync(wid)
        assert doc["status"] == "synced" and doc["tls_pin"] is None
    with (
        dashboard(tmp_path, port=dash_port, name="strict", VECTIS_REQUIRE_TLS="1") as dash,
        worker_daemon(host, tmp_path / "w1-strict.log") as proc,
    ):
        doc = dash.sync(wid)
        assert doc["status"] == "failed", doc
        assert "VECTIS_REQUIRE_TLS" in doc["last_error"] and "plain HTTP" in doc["last_error"]
        assert "POST /sync" not in proc.output
        # The worker gets its key (`vectis worker init`), restarts and reports the pin: TLS.
        init = run_cli(["worker", "init", "--json"], env=host.env())
        assert init.returncode == 0, init.stderr
        proc.stop()
    with (
        dashboard(tmp_path, port=dash_port, name="strict-2", VECTIS_REQUIRE_TLS="1") as dash,
        worker_daemon(host, tmp_path / "w1-tls.log"),
    ):
        beat = run_cli(["sync", "--json", "--ip", "127.0.0.1"], env=host.env())
        assert beat.returncode == 0, beat.stderr
        assert dash.worker(wid)["tls_pin"] == host.tls_pin
        doc = dash.sync(wid)
        assert doc["status"] == "synced", doc


def _own_address() -> str | None:
    """A non-loopback address of this machine (a UDP connect sends nothing), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_no_token_or_heartbeat_goes_to_a_plain_non_loopback_url_without_the_override(
    tmp_path: Path,
) -> None:
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    listener = socket.create_server(("0.0.0.0", 0))
    listener.settimeout(0.2)
    url = f"http://{address}:{listener.getsockname()[1]}"
    token = "enroll-token-never-in-clear-0123456789"
    host = worker_host(tmp_path / "w1", tls=True)
    received = bytearray()

    def accepted() -> int:
        """Connections made to the listener so far (their bytes kept)."""
        count = 0
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return count
            with conn:
                conn.settimeout(2)
                with suppress(OSError):
                    received.extend(conn.recv(65536))
            count += 1

    with listener:
        done = run_cli(
            ["register", "--json", "--dashboard-url", url, "--ip", "127.0.0.1"],
            env=host.env(VECTIS_TOKEN=token),
        )
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert "refusing to send the enrollment token" in done.stderr
        assert "VECTIS_ALLOW_PLAIN_HTTP" in done.stderr
        # A registered worker's heartbeat is refused alike.
        host.enroll("brave-otter-3f2a", "brave-otter-3f2a.test", dashboard_url=url)
        beat = run_cli(["sync", "--json", "--ip", "127.0.0.1"], env=host.env())
        assert beat.returncode == 3 and "refusing to send a heartbeat" in beat.stderr
        assert accepted() == 0 and token.encode() not in received
        # Said explicitly, the token goes (in clear: the listener reads it; nobody answers).
        allowed = threading.Thread(
            target=run_cli,
            args=(["register", "--json", "--dashboard-url", url, "--ip", "127.0.0.1"],),
            kwargs={"env": host.env(VECTIS_TOKEN=token, VECTIS_ALLOW_PLAIN_HTTP="1")},
        )
        allowed.start()
        until(lambda: accepted() or token.encode() in received, "the allowed registration")
        allowed.join(60)
        assert token.encode() in received
