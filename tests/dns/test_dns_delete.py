"""Deleting a worker deletes its DNS record: a real dashboard, the rfc2136 backend, a real knotd.

Every check asks knotd itself (dnspython over TCP) for the A record and the TXT ownership
marker, so a delete that only forgets the worker in the dashboard's database fails here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.knot import KnotServer, knot_server
from tests.support import Proc, free_port, http, run_cli, running, until
from vectis.dashboard.dns.policy import MARKER

pytestmark = pytest.mark.dns

ADMIN = "admin-" + "c3d4e5f6a7" * 4
ENROLL = "enroll-" + "d8e9f0a1b2" * 4
ZONE = "fleet.test"


@dataclass
class Dashboard:
    url: str
    env: dict[str, str]
    proc: Proc

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        token = ENROLL if path.endswith("auto-register") else ADMIN
        status, _, raw = http(method, self.url + path, body, {"Authorization": f"Bearer {token}"})
        return status, json.loads(raw)

    def register(self, ip: str) -> dict[str, Any]:
        body = {"ip": ip, "secret": secrets.token_hex(32), "port": 3000}
        status, doc = self.call("POST", "/infra/workers/auto-register", body)
        assert status == 201, doc
        return dict(doc)


@pytest.fixture
def knot(tmp_path: Path) -> Iterator[KnotServer]:
    with knot_server(tmp_path / "knot", zone=ZONE) as server:
        yield server


@pytest.fixture
def dashboard(tmp_path: Path, knot: KnotServer) -> Iterator[Dashboard]:
    assert knot.key is not None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "VECTIS_ADMIN_TOKEN": ADMIN,
        "VECTIS_TOKEN": ENROLL,
        "VECTIS_SYNC_INTERVAL": "0",
        "VECTIS_DNS_BACKEND": "rfc2136",
        "VECTIS_ZONE": ZONE,
        "VECTIS_RFC2136_SERVER": knot.host,
        "VECTIS_RFC2136_PORT": str(knot.port),
        "VECTIS_RFC2136_TSIG_FILE": str(knot.key.write(tmp_path / "tsig.key")),
        "VECTIS_RFC2136_TIMEOUT": "1",
        "VECTIS_DASHBOARD_URL": url,
    }
    args = ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, ready_url=f"{url}/healthz", log=tmp_path / "dashboard.log", env=env) as p:
        yield Dashboard(url, env, p)


def _records(knot: KnotServer, name: str) -> tuple[list[str], list[str]]:
    """(A, TXT) at `name`, as knotd holds them."""
    return knot.query(name, "A"), knot.query(name, "TXT")


def _provisioned(knot: KnotServer, w: dict[str, Any], ip: str) -> None:
    until(lambda: _records(knot, w["subdomain"]) == ([ip], [MARKER]), f"{w['subdomain']} in DNS")


def test_deleting_a_worker_through_the_api_and_the_cli_deletes_its_records(
    dashboard: Dashboard, knot: KnotServer
) -> None:
    by_api = dashboard.register("192.0.2.51")
    by_cli = dashboard.register("192.0.2.52")
    kept = dashboard.register("192.0.2.53")
    for w, ip in ((by_api, "192.0.2.51"), (by_cli, "192.0.2.52"), (kept, "192.0.2.53")):
        _provisioned(knot, w, ip)

    status, doc = dashboard.call("DELETE", f"/infra/workers/{by_api['id']}")
    assert (status, doc) == (200, {"id": by_api["id"], "deleted": True})
    # The API answers once the record is deleted: no waiting needed.
    assert _records(knot, by_api["subdomain"]) == ([], [])

    done = run_cli(
        ["dashboard", "workers", "delete", by_cli["id"], "--yes", "--json"], env=dashboard.env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": by_cli["id"], "deleted": True}
    assert _records(knot, by_cli["subdomain"]) == ([], [])

    # Only the deleted workers' names went.
    assert _records(knot, kept["subdomain"]) == (["192.0.2.53"], [MARKER])
    assert knot.query(f"ns1.{ZONE}", "A") == ["127.0.0.1"]
    status, listed = dashboard.call("GET", "/infra/workers")
    assert status == 200 and [w["id"] for w in listed["workers"]] == [kept["id"]]


def test_a_record_whose_delete_failed_is_deleted_once_dns_is_back(
    dashboard: Dashboard, knot: KnotServer
) -> None:
    gone = dashboard.register("192.0.2.61")
    kept = dashboard.register("192.0.2.62")
    _provisioned(knot, gone, "192.0.2.61")
    _provisioned(knot, kept, "192.0.2.62")

    knot.stop()
    # DNS being down never fails the delete: the worker is gone, its record queued.
    status, doc = dashboard.call("DELETE", f"/infra/workers/{gone['id']}")
    assert (status, doc) == (200, {"id": gone["id"], "deleted": True})
    assert dashboard.call("GET", f"/infra/workers/{gone['id']}")[0] == 404
    assert f"DNS delete of {gone['subdomain']} failed" in dashboard.proc.output

    knot.start()
    # knotd kept its zone across the restart (the other worker's records are still there),
    # so the deleted worker's record can only go through the dashboard's retry.
    assert _records(knot, kept["subdomain"]) == (["192.0.2.62"], [MARKER])
    until(lambda: _records(knot, gone["subdomain"]) == ([], []), "the retried delete", 20)
    assert _records(knot, kept["subdomain"]) == (["192.0.2.62"], [MARKER])
