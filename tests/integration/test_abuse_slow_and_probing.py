"""Slow clients are cut off, and the worker port tells an outsider nothing."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_abuse_support import time_to_cutoff
from tests.integration.test_dashboard_support import ENROLL, dashboard
from tests.integration.test_worker_daemon import (
    Worker,
    auth,
    body_of,
    call,
    setup_worker,
    sync,
    worker_env,
)
from tests.support import running

# A connection that has not sent a whole request by then is closed. The servers' timeouts
# must sit below this; every probe runs at once, so the test waits this long at most once.
CUTOFF = 15.0

PROBES = {
    # Opens a connection and sends nothing.
    "idle": (b"", b""),
    # Sends its request line and then one header byte every half second, forever.
    "slow headers": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"abcdefgh"),
    # Sends whole headers announcing a small body, then one body byte every half second.
    "slow body": (b"", b"x"),
}


@dataclass
class Cutoffs:
    dashboard: dict[str, float | None]
    worker: dict[str, float | None]


@pytest.fixture(scope="module")
def cutoffs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cutoffs]:
    base = tmp_path_factory.mktemp("slow")
    w = setup_worker(base / "etc")
    with (
        dashboard(base) as dash,
        running(["worker", "serve"], ready_url=w.healthz, log=base / "w.log", env=worker_env(w)),
    ):
        dash_port = int(dash.url.rsplit(":", 1)[1])
        slow_body_heads = {
            dash_port: b"POST /infra/workers/auto-register HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + ENROLL.encode() + b"\r\nContent-Length: 1000\r\n\r\n",
            w.port: b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Authorization: " + auth(w.key, b"x" * 1000)[0].encode() + b"\r\n\r\n",
        }
        jobs = {}
        with ThreadPoolExecutor(max_workers=2 * len(PROBES)) as pool:
            for port in (dash_port, w.port):
                for name, (first, drip) in PROBES.items():
                    first = first or (slow_body_heads[port] if name == "slow body" else b"")
                    jobs[port, name] = pool.submit(time_to_cutoff, port, first, drip, CUTOFF)
        # Both servers still serve everyone else.
        assert dash.call("GET", "/healthz", token=None)[0] == 200
        assert sync(w)[0] == 200
        yield Cutoffs(
            {name: jobs[dash_port, name].result() for name in PROBES},
            {name: jobs[w.port, name].result() for name in PROBES},
        )


@pytest.mark.slow
@pytest.mark.parametrize("probe", list(PROBES))
def test_dashboard_cuts_off_slow_clients(cutoffs: Cutoffs, probe: str) -> None:
    took = cutoffs.dashboard[probe]
    assert took is not None, f"{probe}: still open after {CUTOFF} s"


@pytest.mark.slow
@pytest.mark.parametrize("probe", list(PROBES))
def test_worker_cuts_off_slow_clients(cutoffs: Cutoffs, probe: str) -> None:
    took = cutoffs.worker[probe]
    assert took is not None, f"{probe}: still open after {CUTOFF} s"


# -- the worker port without a valid signature ---------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"]
PATHS = [
    "/",
    "/sync",
    "/sync/",
    "//sync",
    "/%73ync",
    "/sync?x=1",
    "/SYNC",
    "/healthz/",
    "/healthz?verbose=1",
    "/metrics",
    "/admin",
    "/static/app.js",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/infra/workers",
    "/" + "a" * 4000,
    "/%C3%A9t%C3%A9",
]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    base = tmp_path_factory.mktemp("probe")
    w = setup_worker(base / "etc")
    with running(
        ["worker", "serve"], ready_url=w.healthz, log=base / "w.log", env=worker_env(w)
    ) as proc:
        w.proc = proc
        yield w


def _headers_variants(w: Worker) -> list[dict[str, str]]:
    """No auth, junk auth, and signatures that are valid for something else."""
    body = body_of()
    return [
        {},
        {"Authorization": "Bearer nothing"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": auth(w.key, body, path="/other")[0]},  # signed for another path
        {"Authorization": auth(b"\x00" * 32, body)[0]},  # another key
        {"Authorization": auth(w.key, body, wid="other-otter-0000")[0]},
    ]


def test_worker_answers_only_401_or_healthz_without_a_valid_signature(worker: Worker) -> None:
    rng = random.Random(8)
    variants = _headers_variants(worker)
    seen = 0
    for method in METHODS:
        for path in PATHS:
            headers = rng.choice(variants)
            body = body_of() if method in ("POST", "PUT", "PATCH") else None
            status, answer_headers, answer = call(worker.port, method, path, body, headers)
            seen += 1
            assert "X-Vectis-Signature" not in answer_headers
            if path.split("?")[0] == "/healthz" and method == "GET":
                assert (status, json.loads(answer)) == (200, {"status": "ok"})
                continue
            assert status == 401, (method, path, status, answer[:200])
            if method != "HEAD":
                assert json.loads(answer) == {"error": "unauthorized"}, (method, path)
    # /healthz itself answers and reveals nothing.
    status, _, answer = call(worker.port, "GET", "/healthz")
    assert (status, json.loads(answer)) == (200, {"status": "ok"})
    assert seen == len(METHODS) * len(PATHS)
    # And a valid signature still works afterwards: nothing above disturbed the daemon.
    assert sync(worker)[0] == 200


def test_worker_does_not_name_its_software_to_outsiders(worker: Worker) -> None:
    for path in ("/healthz", "/sync", "/x"):
        _, headers, _ = call(worker.port, "GET", path)
        server = headers.get("Server", "")
        assert "aiohttp" not in server and "Python" not in server, server


def test_dashboard_unknown_paths_and_methods_leak_nothing(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            for path in ("/infra/workers/../tokens", "/infra/nope", "/%2e%2e/etc/passwd", "/x"):
                status, doc = dash.call(method, path, token=None)
                # No route matches: 404 for every method, before any authentication.
                assert status == 404, (method, path, status)
                assert doc == {"error": "not_found", "message": "Not Found"}, doc
                assert "Traceback" not in json.dumps(doc)
        assert "Traceback" not in dash.proc.output
