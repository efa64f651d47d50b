"""The dashboard's HTTP API against a real `vectis dashboard serve` process."""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_abuse_guessing import register_from
from tests.integration.test_dashboard_support import ADMIN, ENROLL, Dash, dashboard
from tests.support import free_port, http, running
from vectis import __version__, contract

SECRET = secrets.token_hex(32)


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    with dashboard(tmp_path_factory.mktemp("api"), VECTIS_DNS_BACKEND="memory") as d:
        yield d


def new_secret() -> str:
    return secrets.token_hex(32)


def test_register_again_and_conflict(dash: Dash) -> None:
    port = free_port()
    status, first = dash.register(SECRET, port)
    assert status == 201, first
    assert set(first) == {"id", "subdomain", "ip", "dashboard_version"}
    assert first["dashboard_version"] == __version__
    status, again = dash.register(SECRET.upper(), port)
    assert status == 200 and again == first
    status, moved = dash.register(SECRET, port, ip="10.1.2.3")
    assert status == 200 and moved["id"] == first["id"] and moved["ip"] == "10.1.2.3"
    status, err = dash.register(new_secret(), port, ip="10.1.2.3")
    assert status == 409 and err["error"] == "conflict", err
    doc = dash.worker(first["id"])
    assert doc["ip"] == "10.1.2.3" and doc["port"] == port
    assert "secret" not in json.dumps(doc) and SECRET not in json.dumps(doc).lower()


def test_ipv6_and_default_port(dash: Dash) -> None:
    status, reg = dash.call(
        "POST", "/infra/workers/auto-register", {"ip": "::1", "secret": new_secret()}, token=ENROLL
    )
    assert status == 201
    doc = dash.worker(reg["id"])
    assert doc["ip"] == "::1" and doc["port"] == 3000


BAD_BODIES: list[bytes] = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'"text"',
    b"\xff\xfe{}",
    b'{"ip": "127.0.0.1"}',
    b'{"secret": "' + SECRET.encode() + b'"}',
    b'{"ip": "0.0.0.0", "secret": "' + SECRET.encode() + b'"}',
    b'{"ip": "::", "secret": "' + SECRET.encode() + b'"}',
    b'{"ip": "224.0.0.1", "secret": "' + SECRET.encode() + b'"}',
    b'{"ip": "ff02::1", "secret": "' + SECRET.encode() + b'"}',
    b'{"ip": "255.255.255.255", "secret": "' + SECRET.encode() + b'"}',
    b'{"ip": "999.1.1.1", "secret": "' + SECRET.encode() + b'"}',
    b'{"ip": 12, "secret": "' + SECRET.encode() + b'"}',
    b'{"ip": "127.0.0.1", "secret": "abc"}',
    b'{"ip": "127.0.0.1", "secret": "' + b"g" * 64 + b'"}',
    b'{"ip": "127.0.0.1", "secret": "' + b"a" * 130 + b'"}',
    b'{"ip": "127.0.0.1", "secret": "' + b"a" * 33 + b'"}',
    b'{"ip": "127.0.0.1", "secret": 123}',
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "port": 0}',
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "port": 70000}',
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "port": "3000"}',
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "port": true}',
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "port": 1e400}',
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "port": ' + b"9" * 5000 + b"}",
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "hostname": ["x"]}',
    b'{"ip": "127.0.0.1", "secret": "' + SECRET.encode() + b'", "hostname": "' + b"h" * 300 + b'"}',
    b'{"ip": "\\u00e9\\ud800", "secret": "' + SECRET.encode() + b'"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"ip": NaN}',
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_malformed_registration_is_400(dash: Dash, body: bytes) -> None:
    status, doc = dash.call(
        "POST",
        "/infra/workers/auto-register",
        body,
        token=ENROLL,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400, (body[:80], doc)
    assert doc["error"] == "bad_request" and doc["message"]


def test_oversized_body_is_413_before_reading(dash: Dash) -> None:
    port = int(dash.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /infra/workers/auto-register HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + ENROLL.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{"
        )
        answer = sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"] == "too_large"
    # Sent in full (chunked, no length): refused too.
    status, doc = dash.call(
        "POST", "/infra/workers/auto-register", b"x" * (1024 * 1024 + 10), token=ENROLL
    )
    assert status == 413 and doc["error"] == "too_large"


def test_bad_tokens_are_401_and_then_429_for_that_address_only(tmp_path: Path) -> None:
    with dashboard(tmp_path, name="limits") as d:
        good = {"ip": "127.0.0.1", "secret": new_secret(), "port": 4000}
        for token in ("wrong", "", "Bearer", ENROLL + "x"):
            status, doc = d.call("POST", "/infra/workers/auto-register", good, token=token)
            assert status == 401 and doc == {"error": "unauthorized"}
        status, doc = d.call("POST", "/infra/workers/auto-register", good, token=None)
        assert status == 401 and doc == {"error": "unauthorized"}
        codes = [
            d.call("POST", "/infra/workers/auto-register", good, token="guess")[0]
            for _ in range(10)
        ]
        assert codes[:5] == [401] * 5 and codes[-1] == 429, codes
        # Login and admin calls count toward the same address's limit.
        assert d.call("POST", "/login", {"token": "guess"}, token=None)[0] == 429
        # The blocked address is refused whatever it sends; a valid token from another
        # network is never slowed by those failures.
        assert d.register(good["secret"], 4000)[0] == 429
        port = int(d.url.rsplit(":", 1)[1])
        burst = [register_from("127.1.0.1", port, ENROLL)[0] for _ in range(20)]
        assert burst == [201] * 20
        assert d.call("GET", "/infra/workers")[0] == 429  # the admin token too, from there
    assert ENROLL not in d.proc.output and "guess" not in d.proc.output


def test_concurrent_registrations_of_one_secret_yield_one_worker(tmp_path: Path) -> None:
    with dashboard(tmp_path, name="race") as d:
        secret = new_secret()
        results: list[tuple[int, Any]] = []

        def go() -> None:
            results.append(d.register(secret, 5555))

        threads = [threading.Thread(target=go) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(s for s, _ in results)
        assert codes == [200] * 15 + [201], codes
        assert len({doc["id"] for _, doc in results}) == 1
        assert len(d.call("GET", "/infra/workers")[1]["workers"]) == 1


def test_enrollment_tokens(dash: Dash) -> None:
    status, made = dash.call(
        "POST", "/infra/tokens", {"description": "rack 4", "max_uses": 1, "expires_in": 3600}
    )
    assert status == 201, made
    token = made.pop("token")
    assert made["state"] == "active" and made["uses"] == 0 and made["expires_at"]
    status, listed = dash.call("GET", "/infra/tokens")
    mine = [t for t in listed["tokens"] if t["id"] == made["id"]]
    assert mine and "token" not in mine[0] and token not in json.dumps(listed)
    secret = new_secret()
    assert dash.register(secret, 6001, token=token)[0] == 201
    # Used up: a new worker is refused, the same worker registering again is not.
    assert dash.register(new_secret(), 6002, token=token)[0] == 401
    assert dash.register(secret, 6001, token=token)[0] == 200
    status, revoked = dash.call("DELETE", f"/infra/tokens/{made['id']}")
    assert status == 200 and revoked["state"] == "revoked"
    assert dash.register(secret, 6001, token=token)[0] == 401
    assert dash.call("DELETE", "/infra/tokens/nope")[0] == 404
    for bad in (
        {"max_uses": 0},
        {"expires_in": -5},
        {"expires_at": "yesterday"},
        {"expires_at": "2001-01-01T00:00:00Z"},
        {"description": 5},
        {"max_uses": 1.5},
    ):
        status, doc = dash.call("POST", "/infra/tokens", bad)
        assert status == 400 and doc["error"] == "bad_request", (bad, doc)


def test_admin_auth_sessions_and_csrf(dash: Dash) -> None:
    assert dash.call("GET", "/infra/workers", token=None) == (401, {"error": "unauthorized"})
    assert dash.call("GET", "/infra/workers", token="nope")[0] == 401
    assert dash.call("GET", "/metrics", token=None)[0] == 401
    assert dash.call("POST", "/login", {"token": "wrong"}, token=None)[0] == 401
    status, headers, raw = http("POST", dash.url + "/login", {"token": ADMIN})
    assert status == 200
    csrf = json.loads(raw)["csrf"]
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    assert dash.call("GET", "/session", token=None, headers=jar)[1] == {
        "authenticated": True,
        "csrf": csrf,
    }
    assert dash.call("GET", "/session", token=None)[1] == {"authenticated": False}
    assert dash.call("GET", "/infra/workers", token=None, headers=jar)[0] == 200
    status, doc = dash.call("POST", "/infra/tokens", {}, token=None, headers=jar)
    assert status == 403 and doc["error"] == "forbidden"
    bad = {**jar, "X-Vectis-CSRF": "x" + csrf}
    assert dash.call("POST", "/infra/tokens", {}, token=None, headers=bad)[0] == 403
    good = {**jar, "X-Vectis-CSRF": csrf}
    assert dash.call("POST", "/infra/tokens", {}, token=None, headers=good)[0] == 201
    assert dash.call("POST", "/logout", token=None, headers=jar)[0] == 403
    assert dash.call("POST", "/logout", token=None, headers=good)[0] == 200
    assert dash.call("GET", "/infra/workers", token=None, headers=jar)[0] == 401


def test_worker_admin_calls_and_unknown_ids(dash: Dash) -> None:
    status, reg = dash.register(new_secret(), 7001, hostname="box-1", version="9.9.9")
    wid = reg["id"]
    listed = dash.call("GET", "/infra/workers?status=pending")[1]["workers"]
    assert wid in [w["id"] for w in listed]
    assert wid not in [
        w["id"] for w in dash.call("GET", "/infra/workers?status=synced")[1]["workers"]
    ]
    doc = dash.worker(wid)
    for key in (
        "id",
        "subdomain",
        "ip",
        "port",
        "status",
        "dns_status",
        "last_sync",
        "last_error",
        "consecutive_failures",
        "version",
        "desired_revision",
        "applied_revision",
        "stats",
        "hostname",
        "metadata",
        "created_at",
        "updated_at",
        "history",
        "config",
    ):
        assert key in doc, key
    assert doc["hostname"] == "box-1" and doc["version"] == "9.9.9" and doc["stats"] is None
    assert dash.call("GET", "/infra/workers?status=bogus")[0] == 400
    for bad in (b"[1]", b"{", b'{"a": null}', b'{"a": [1, null]}', b'{"a": NaN}'):
        status, err = dash.call("PUT", f"/infra/workers/{wid}/config", bad)
        assert status == 400, (bad, err)
    big = b'{"a": "' + b"x" * (600 * 1024) + b'"}'
    assert dash.call("PUT", f"/infra/workers/{wid}/config", big)[0] == 413
    for method, path in (
        ("GET", "/infra/workers/nope"),
        ("POST", "/infra/workers/nope/sync"),
        ("PUT", "/infra/workers/nope/config"),
        ("DELETE", "/infra/workers/nope"),
        ("GET", "/infra/workers/%C3%A9%00"),
        ("GET", "/no/such/route"),
    ):
        status, err = dash.call(method, path, b"{}")
        assert status == 404 and err["error"] == "not_found", (method, path, err)
    assert dash.call("PATCH", "/infra/workers")[0] == 405
    status, gone = dash.call("DELETE", f"/infra/workers/{wid}")
    assert status == 200 and gone == {"id": wid, "deleted": True}
    assert dash.call("GET", f"/infra/workers/{wid}")[0] == 404


def test_dns_records_follow_workers(dash: Dash) -> None:
    # The memory backend lives in the dashboard process; its state shows as dns_status.
    import time

    _, reg = dash.register(new_secret(), 7101)
    deadline = time.monotonic() + 10
    while dash.worker(reg["id"])["dns_status"] != "synced" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dash.worker(reg["id"])["dns_status"] == "synced"


def test_heartbeat_refusals_are_uniform_401(dash: Dash) -> None:
    status, reg = dash.register(new_secret(), 7201)
    wid = reg["id"]
    for path in (
        f"/infra/workers/{wid}/heartbeat",
        f"/infra/workers/{wid}/heartbeat?x=1",
        f"/infra/workers/{wid}/heartbe%61t",
        "/infra/workers/Nope/heartbeat",
    ):
        for auth in ("", "Bearer v1.x", "Bearer v1.é.1.a.b", f"Bearer {ADMIN}"):
            status, doc = dash.call(
                "POST", path, b"{}", token=None, headers={"Authorization": auth}
            )
            assert (status, doc) == (401, {"error": "unauthorized"}), (path, auth, doc)


def test_pages_static_files_and_install_script(dash: Dash) -> None:
    status, headers, raw = http("GET", dash.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"<html" in raw.lower()
    web = Path(__file__).resolve().parents[2] / "vectis" / "dashboard" / "web"
    for f in sorted(web.glob("*.*"))[:5]:
        status, headers, raw = http("GET", f"{dash.url}/static/{f.name}")
        assert status == 200 and raw == f.read_bytes()
        if f.suffix == ".js":
            assert headers["Content-Type"].startswith("text/javascript")
        if f.suffix == ".css":
            assert headers["Content-Type"].startswith("text/css")
    # The page's shared facts, generated from vectis/contract.py rather than stored in web/.
    status, headers, raw = http("GET", f"{dash.url}/static/contract.js")
    assert status == 200 and raw == contract.page_module().encode()
    assert headers["Content-Type"].startswith("text/javascript")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("..%2Fapi.py", "../api.py", "%2e%2e", "nope.js", ".hidden", "a%00b"):
        status, _, raw = http("GET", f"{dash.url}/static/{name}")
        assert status == 404, name
    status, headers, raw = http("GET", dash.url + "/install.sh")
    script = Path(__file__).resolve().parents[2] / "vectis" / "scripts" / "install.sh"
    if script.exists():
        # The script, with this dashboard's worker wheel filled in (test_worker_dist.py).
        assert status == 200 and len(raw.splitlines()) == len(script.read_bytes().splitlines())
        assert f'\nSERVED_VERSION="{__version__}"\n'.encode() in raw
        assert headers["Content-Type"].startswith("text/x-shellscript")
    else:
        assert status == 404 and json.loads(raw)["error"] == "not_found"


def test_generated_admin_token_is_printed_once_and_survives_restart(tmp_path: Path) -> None:
    port = free_port()
    env = {"VECTIS_DATA_DIR": str(tmp_path / "data"), "VECTIS_SYNC_INTERVAL": "0"}
    url = f"http://127.0.0.1:{port}"
    args = ["dashboard", "serve", "--port", str(port)]
    with running(args, ready_url=url + "/healthz", log=tmp_path / "1.log", env=env) as p:
        pass
    assert p.popen.returncode == 0
    line = [x for x in p.output.splitlines() if "admin token" in x]
    assert len(line) == 1, p.output
    token = line[0].rsplit(" ", 1)[1]
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "data" / "dashboard.db").stat().st_mode & 0o777 == 0o600
    with running(args, ready_url=url + "/healthz", log=tmp_path / "2.log", env=env) as p2:
        status, _, _ = http(
            "GET", url + "/infra/workers", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200
    assert "shown only now" not in p2.output and token not in p2.output


def test_admin_token_file_and_startup_errors(tmp_path: Path) -> None:
    from tests.support import run_cli

    token_file = tmp_path / "admin.token"
    token_file.write_text("from-a-file-0123456789abcdef\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["dashboard", "serve", "--port", str(port), "--admin-token-file", str(token_file)]
    env = {"VECTIS_SYNC_INTERVAL": "0", "VECTIS_ADMIN_TOKEN": "ignored-when-a-file-is-given"}
    with running(args, ready_url=url + "/healthz", log=tmp_path / "f.log", env=env) as p:
        auth = {"Authorization": "Bearer from-a-file-0123456789abcdef"}
        assert http("GET", url + "/infra/tokens", headers=auth)[0] == 200
        wrong = {"Authorization": "Bearer ignored-when-a-file-is-given"}
        assert http("GET", url + "/infra/tokens", headers=wrong)[0] == 401
    assert "shown only now" not in p.output

    empty = tmp_path / "empty"
    empty.write_text("")
    bad_runs = [
        (["--admin-token-file", str(tmp_path / "missing")], {}, "cannot read the admin token"),
        (["--enroll-token-file", str(empty)], {}, "file is empty"),
        ([], {"VECTIS_SYNC_INTERVAL": "soon"}, "VECTIS_SYNC_INTERVAL"),
        ([], {"VECTIS_SYNC_CONCURRENCY": "0"}, "VECTIS_SYNC_CONCURRENCY"),
        (["--zone", "bad zone!"], {}, "zone"),
        (["--dns-backend", "carrier-pigeon"], {}, "carrier-pigeon"),
    ]
    for extra, extra_env, message in bad_runs:
        done = run_cli(["dashboard", "serve", "--port", str(free_port()), *extra], env=extra_env)
        assert done.returncode == 3, (extra, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout

    # The port is taken: a clear error, not a traceback.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        done = run_cli(["dashboard", "serve", "--port", str(taken.getsockname()[1])])
    assert done.returncode == 3 and "cannot listen" in done.stderr, done.stderr
    # Nothing was generated for a start that could not listen: the next start shows its token.
    assert "admin token" not in done.stderr
