"""Keep-alive of the dashboard's syncs (issue 18), real processes: a dashboard, a TLS worker
and a relay between them that counts connections and can cut one.

A worker synced again within VECTIS_SYNC_KEEPALIVE is reached over the connection of its
last sync (no new handshake); a kept connection the worker closed is retried once on a new
connection and fails nothing; past the idle time a new connection (and handshake) is made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.test_dashboard_support import (
    Dash,
    WorkerHost,
    dashboard,
    worker_daemon,
    worker_host,
)
from tests.integration.test_tls import Relay
from vectis.configfile import locked_conf


class CuttingRelay(Relay):
    """A relay that, once `cut()` is called, closes the next connection the dashboard sends
    bytes on, without passing them on: as a worker that closed a kept connection just as the
    dashboard reused it."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self._cut = threading.Event()
        self.cuts = 0

    def cut(self) -> None:
        self._cut.set()

    def _passes(self, kept: bytearray) -> bool:
        if kept is self.to_worker and self._cut.is_set():
            self._cut.clear()
            self.cuts += 1
            return False  # dropped: the worker never sees this request
        return True


@contextmanager
def tls_worker_behind_relay(tmp_path: Path, **env: str) -> Iterator[tuple[Dash, str, CuttingRelay]]:
    """A dashboard, a running TLS worker registered at a relay's port, and the relay."""
    with dashboard(tmp_path, **env) as dash:
        host: WorkerHost = worker_host(tmp_path / "w1", tls=True)
        pin = host.tls_pin
        assert pin is not None
        with locked_conf(host.conf_dir / "worker.conf") as conf:
            conf.settings.dashboard_url = None  # no heartbeat around the relay
        relay = CuttingRelay(host.port)
        status, doc = dash.register(host.secret, relay.port, tls_pin=pin)
        assert status == 201, doc
        with locked_conf(host.conf_dir / "worker.conf") as conf:
            conf.state.id = doc["id"]
        with worker_daemon(host, tmp_path / "w1.log"), relay.running():
            yield dash, doc["id"], relay


def synced(doc: dict[str, object]) -> bool:
    return doc["status"] == "synced" and doc["last_error"] is None


def test_a_worker_synced_again_soon_is_reached_over_the_same_tls_connection(
    tmp_path: Path,
) -> None:
    with tls_worker_behind_relay(tmp_path, VECTIS_SYNC_KEEPALIVE="30") as (dash, wid, relay):
        for _ in range(3):
            assert synced(dash.sync(wid))
        assert relay.connections == 1
        sent = bytes(relay.to_worker)
        # One handshake (one ClientHello) carried the three syncs, all encrypted.
        assert sent.count(b"\x16\x03\x01") == 1, sent[:16]
        assert b"POST" not in sent and b"/sync" not in sent


def test_a_kept_connection_the_worker_closed_is_retried_once_and_fails_nothing(
    tmp_path: Path,
) -> None:
    with tls_worker_behind_relay(tmp_path, VECTIS_SYNC_KEEPALIVE="30") as (dash, wid, relay):
        assert synced(dash.sync(wid))
        relay.cut()  # the kept connection ends when the next request arrives on it
        doc = dash.sync(wid)
        assert relay.cuts == 1
        assert synced(doc), doc
        assert doc["consecutive_failures"] == 0
        assert relay.connections == 2  # the retry made a new connection (a new handshake)
        history = dash.worker(wid)["history"]
        assert history and not any(e["status"] == "failed" for e in history), history
        assert synced(dash.sync(wid))
        assert relay.connections == 2  # and that one is kept in turn


def test_past_the_idle_time_a_sync_makes_a_new_connection(tmp_path: Path) -> None:
    with tls_worker_behind_relay(tmp_path, VECTIS_SYNC_KEEPALIVE="0.3") as (dash, wid, relay):
        assert synced(dash.sync(wid))
        time.sleep(0.8)  # past the dashboard's idle time: it closed the connection itself
        assert synced(dash.sync(wid))
        assert relay.connections == 2


def test_keepalive_off_makes_a_connection_per_sync(tmp_path: Path) -> None:
    with tls_worker_behind_relay(tmp_path, VECTIS_SYNC_KEEPALIVE="0") as (dash, wid, relay):
        assert synced(dash.sync(wid))
        assert synced(dash.sync(wid))
        assert relay.connections == 2
