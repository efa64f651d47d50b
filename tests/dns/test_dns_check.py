"""A real dashboard with the rfc2136 backend on a real knotd: provisioning, retry, `dns check`."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.knot import KnotServer, knot_server
from tests.support import free_port, http, run_cli, running
from vectis.dashboard.reconcile import judge, split_server
from vectis.errors import ConfigError

pytestmark = pytest.mark.dns

ADMIN = "admin-" + "a1b2c3d4e5" * 4
ENROLL = "enroll-" + "b6c7d8e9f0" * 4
ZONE = "fleet.test"


def wait_for(condition: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


class Dashboard:
    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env

    def register(self, ip: str) -> dict[str, Any]:
        body = {"ip": ip, "secret": secrets.token_hex(32), "port": 3000}
        status, _, raw = http(
            "POST",
            f"{self.url}/infra/workers/auto-register",
            body,
            {"Authorization": f"Bearer {ENROLL}"},
        )
        assert status == 201, raw
        return dict(json.loads(raw))

    def worker(self, worker_id: str) -> dict[str, Any]:
        status, _, raw = http(
            "GET",
            f"{self.url}/infra/workers/{worker_id}",
            None,
            {"Authorization": f"Bearer {ADMIN}"},
        )
        assert status == 200, raw
        return dict(json.loads(raw))

    def check(self, *args: str) -> tuple[int, dict[str, Any]]:
        proc = run_cli(["dashboard", "dns", "check", "--json", *args], env=self.env)
        assert proc.stdout, proc.stderr
        return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def knot(tmp_path: Path) -> Iterator[KnotServer]:
    with knot_server(tmp_path / "knot", zone=ZONE) as server:
        yield server


@pytest.fixture
def dashboard(tmp_path: Path, knot: KnotServer) -> Iterator[Dashboard]:
    assert knot.key is not None
    port = free_port()
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
        "VECTIS_DNS_CHECK_SERVER": knot.address,
    }
    args = ["dashboard", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running(args, ready_url=f"{url}/healthz", log=tmp_path / "dashboard.log", env=env):
        yield Dashboard(url, env)


def test_registration_provisions_and_check_finds_and_fixes_drift(
    dashboard: Dashboard, knot: KnotServer
) -> None:
    one = dashboard.register("192.0.2.31")
    two = dashboard.register("2001:db8::32")
    three = dashboard.register("192.0.2.33")
    for w, rtype, ip in ((one, "A", "192.0.2.31"), (two, "AAAA", "2001:db8::32")):
        wait_for(lambda w=w, t=rtype, ip=ip: knot.query(w["subdomain"], t) == [ip], what="record")
    wait_for(lambda: dashboard.worker(three["id"])["dns_status"] == "synced", what="synced")

    code, report = dashboard.check()
    assert code == 0 and report["clean"] and report["counts"]["ok"] == 3
    assert report["servers"] == [knot.address]
    assert {r["name"]: r["resolved"] for r in report["records"]}[one["subdomain"]] == ["192.0.2.31"]

    # Drift: a second address at one name, the other's record gone behind the dashboard's back.
    knot.update(one["subdomain"], "A", "203.0.113.9")
    import dns.query
    import dns.tsigkeyring
    import dns.update

    assert knot.key is not None
    keyring = dns.tsigkeyring.from_text({knot.key.name: knot.key.secret})
    upd = dns.update.UpdateMessage(ZONE + ".", keyring=keyring, keyalgorithm=knot.key.algorithm)
    upd.delete(two["subdomain"] + ".", "AAAA")
    dns.query.tcp(upd, knot.host, 2, knot.port)

    code, report = dashboard.check("--no-resolve")
    states = {r["name"]: r["state"] for r in report["records"]}
    assert code == 1 and not report["clean"]
    assert states == {
        one["subdomain"]: "wrong",
        two["subdomain"]: "missing",
        three["subdomain"]: "ok",
    }
    assert all(r["resolved"] is None for r in report["records"])

    code, report = dashboard.check("--fix")
    assert code == 0 and report["fixed"] == 2
    assert knot.query(one["subdomain"], "A") == ["192.0.2.31"]
    assert knot.query(two["subdomain"], "AAAA") == ["2001:db8::32"]
    resolved = {r["name"]: r["resolved"] for r in report["records"]}
    assert resolved[two["subdomain"]] == ["2001:db8::32"]

    code, report = dashboard.check()
    assert code == 0 and report["counts"]["ok"] == 3
    table = run_cli(["dashboard", "dns", "check"], env={**dashboard.env, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert one["subdomain"] in table.stdout and "3 names: 3 ok" in table.stderr


def test_a_registration_while_dns_is_down_is_provisioned_once_it_is_back(
    dashboard: Dashboard, knot: KnotServer
) -> None:
    knot.stop()
    w = dashboard.register("192.0.2.41")  # DNS failure never fails a registration
    assert dashboard.worker(w["id"])["dns_status"] in ("pending", "failed")
    wait_for(lambda: dashboard.worker(w["id"])["dns_status"] == "failed", what="failed")
    knot.start()
    wait_for(lambda: dashboard.worker(w["id"])["dns_status"] == "synced", timeout=30, what="synced")
    assert knot.query(w["subdomain"], "A") == ["192.0.2.41"]


def test_check_of_a_missing_database_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cli(
        ["dashboard", "dns", "check", "--data-dir", str(tmp_path / "nowhere")],
        env={"VECTIS_DNS_BACKEND": "memory"},
    )
    assert proc.returncode == 3
    assert "no dashboard database here" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_judge_and_server_parsing() -> None:
    assert judge(["192.0.2.1"], ["192.0.2.1"]) == "ok"
    assert judge(["2001:db8::1"], ["2001:DB8:0::1"]) == "ok"
    assert judge(["192.0.2.1"], []) == "missing"
    assert judge(["192.0.2.1"], ["192.0.2.2"]) == "wrong"
    assert judge(["192.0.2.1"], ["192.0.2.1", "192.0.2.2"]) == "wrong"
    assert judge([], ["192.0.2.1"]) == "extra"
    assert split_server("ns1.example") == ("ns1.example", 53)
    assert split_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert split_server("[::1]:5353") == ("::1", 5353)
    assert split_server("2001:db8::53") == ("2001:db8::53", 53)
    with pytest.raises(ConfigError):
        split_server("host:http")
