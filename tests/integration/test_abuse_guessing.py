"""Guessing tokens against a real dashboard: blocked sources, blocked networks, logged counts.

Loopback gives a test every address of 127.0.0.0/8: 127.0.0.7 and 127.0.0.8 are two addresses
of one /24, 127.1.0.1 is in another. The dashboard runs with a 4-second counting window, so a
block and its end both happen within the test.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_dashboard_support import ADMIN, ENROLL, Dash, dashboard
from tests.support import free_port, run_cli, until
from vectis.dashboard.auth import ADDRESS_LIMIT, NETWORK_LIMIT

WINDOW = 4


def call_from(
    source: str, port: int, method: str, path: str, body: object, headers: dict[str, str]
) -> tuple[int, dict[str, str], dict[str, object]]:
    """One call whose source address is `source`; (status, headers, JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request(
            method, path, json.dumps(body), {"Content-Type": "application/json", **headers}
        )
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read())
    finally:
        conn.close()


_GIVEN: set[int] = set()  # worker ports handed out: a registration must not take another's


def _worker_port() -> int:
    """A free port no earlier registration here was given (the kernel may hand out one twice,
    and a second worker on the same IP and port is a 409)."""
    while (port := free_port()) in _GIVEN:
        pass
    _GIVEN.add(port)
    return port


def register_from(
    source: str, port: int, token: str
) -> tuple[int, dict[str, str], dict[str, object]]:
    body = {"ip": "127.0.0.1", "secret": secrets.token_hex(32), "port": _worker_port()}
    auth = {"Authorization": f"Bearer {token}"}
    return call_from(source, port, "POST", "/infra/workers/auto-register", body, auth)


def guess() -> str:
    return f"guess-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    with dashboard(tmp_path_factory.mktemp("guessing"), VECTIS_AUTH_WINDOW=str(WINDOW)) as d:
        yield d


def _port(dash: Dash) -> int:
    return int(dash.url.rsplit(":", 1)[1])


def _assert_blocked(answer: tuple[int, dict[str, str], dict[str, object]]) -> int:
    status, headers, doc = answer
    assert status == 429, answer
    wait = int(headers["Retry-After"])
    assert 1 <= wait <= WINDOW and f"retry in {wait} s" in str(doc["message"]), answer
    return wait


def test_a_blocked_address_is_refused_even_with_the_right_token(dash: Dash) -> None:
    port, guesser, neighbour = _port(dash), "127.0.0.7", "127.0.0.8"
    codes = [register_from(guesser, port, guess())[0] for _ in range(ADDRESS_LIMIT + 3)]
    assert codes == [401] * ADDRESS_LIMIT + [429] * 3, codes
    # The right enrollment token, the right admin token, a login: all refused unread.
    _assert_blocked(register_from(guesser, port, ENROLL))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    _assert_blocked(call_from(guesser, port, "GET", "/infra/tokens", None, admin))
    wait = _assert_blocked(call_from(guesser, port, "POST", "/login", {"token": ADMIN}, {}))
    # One guesser does not lock out the rest of its /24.
    assert register_from(neighbour, port, ENROLL)[0] == 201
    # Retry-After is the truth: once it has passed, the right token works again.
    time.sleep(wait)
    assert register_from(guesser, port, ENROLL)[0] == 201


def test_guessing_spread_over_a_network_blocks_the_network_only(dash: Dash) -> None:
    port = _port(dash)
    per_address = ADDRESS_LIMIT - 2  # each address stays under its own limit
    spread = [f"127.0.5.{i}" for i in range(1, NETWORK_LIMIT // per_address + 2)]
    codes = [register_from(a, port, guess())[0] for a in spread for _ in range(per_address)]
    assert codes[:NETWORK_LIMIT] == [401] * NETWORK_LIMIT and set(codes[NETWORK_LIMIT:]) == {429}
    # A fresh address of the same /24 with the right token waits; another /24 does not.
    _assert_blocked(register_from("127.0.5.200", port, ENROLL))
    assert register_from("127.1.0.1", port, ENROLL)[0] == 201
    until(lambda: "network 127.0.5.0/24" in dash.proc.output, "the network's block in the log")


def test_failures_are_logged_as_counts_not_one_line_each(dash: Dash) -> None:
    port, source = _port(dash), "127.0.9.1"
    guesses = [guess() for _ in range(ADDRESS_LIMIT + 15)]
    for g in guesses:
        register_from(source, port, g)
    summary = re.compile(
        rf"auth failures from address {re.escape(source)}: {ADDRESS_LIMIT} in {WINDOW} s, "
        r"15 more refused while blocked"
    )
    log = until(
        lambda: summary.search(dash.proc.output) and dash.proc.output, "the summary line", 15
    )
    naming = [line for line in log.splitlines() if re.search(rf"\b{re.escape(source)}\b", line)]
    # The first failure as it happened, then the counts: two lines for 25 refused requests.
    assert len(naming) == 2, naming
    assert "auth failure from 127.0.9.1: unknown enrollment token" in naming[0]
    for g in guesses:
        assert g not in log
    assert ENROLL not in log


@pytest.mark.parametrize(
    ("how", "value"),
    [
        ("env", "Zq"),  # far too short
        ("env", "passwordpassword"),  # 16 characters, 7 distinct
        ("file", "x" * 40),
    ],
)
@pytest.mark.parametrize("which", ["admin", "enroll"])
def test_a_weak_token_is_refused_at_start(tmp_path: Path, which: str, how: str, value: str) -> None:
    env = {"VECTIS_DATA_DIR": str(tmp_path / "data"), "VECTIS_SYNC_INTERVAL": "0"}
    variable = "VECTIS_ADMIN_TOKEN" if which == "admin" else "VECTIS_TOKEN"
    args = ["dashboard", "serve", "--port", str(free_port())]
    if how == "env":
        env[variable] = value
        where = variable
    else:
        token_file = tmp_path / "token"
        token_file.write_text(value + "\n")
        args += [f"--{which}-token-file", str(token_file)]
        where = str(token_file)
    done = run_cli(args, env=env, timeout=30)
    assert done.returncode == 3, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and "too weak" in lines[0], done.stderr
    assert value not in done.stderr + done.stdout
    assert not (tmp_path / "data" / "dashboard.db").exists(), "the dashboard started anyway"
