"""A busy dashboard's log: heartbeats answered 200 are counted, not logged one by one (unless
VECTIS_ACCESS_LOG=1); a refused one is still one line. Through the real daemon, whose
heartbeats take the fast path past the router: its answers are the routed ones'."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.integration.test_dashboard_support import dashboard
from tests.support import http, until
from vectis import __version__
from vectis.crypto.secrets import generate_secret, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, new_nonce, sign_request

BEATS = 200


def _beat(url: str, worker_id: str, secret: str, path: str | None = None) -> tuple[int, dict]:
    path = path or f"/infra/workers/{worker_id}/heartbeat"
    body = json.dumps({"port": 3000, "applied_revision": 0, "version": __version__}).encode()
    auth = sign_request(key_from_secret(secret), worker_id, "POST", path, body,
                        ts=int(time.time()), nonce=new_nonce(os.urandom))  # fmt: skip
    status, headers, raw = http("POST", url + path, body, {"Authorization": auth})
    assert status != 200 or headers.get(SIGNATURE_HEADER), "an unsigned 200"
    return status, json.loads(raw)


@pytest.mark.parametrize("access_log", ["0", "1"])
def test_answered_heartbeats_are_counted_and_refusals_logged(
    tmp_path: Path, access_log: str
) -> None:
    calls = str(BEATS * 2)
    with dashboard(
        tmp_path, VECTIS_ACCESS_LOG=access_log, VECTIS_WORKER_CALLS_PER_MINUTE=calls
    ) as dash:
        secret = generate_secret()
        status, doc = dash.register(secret, 3000)
        assert status == 201, doc
        wid = doc["id"]
        for _ in range(BEATS):
            status, answer = _beat(dash.url, wid, secret)
            assert status == 200 and answer["revision"] == 0, answer
        # Refused: a wrong secret, and a path that is not the exact one (routed, not fast).
        assert _beat(dash.url, wid, generate_secret()) == (401, {"error": "unauthorized"})
        odd = f"/infra/workers/{wid}/heartbeat?x=1"
        assert _beat(dash.url, wid, secret, odd)[0] == 401
        assert dash.call("GET", "/healthz?probe")[0] == 200  # a line after the others
        out = until(lambda: "/healthz?..." in dash.proc.output and dash.proc.output, "the log")
        lines = out.splitlines()
        answered = [x for x in lines if f'"POST /infra/workers/{wid}/heartbeat" 200' in x]
        assert len(answered) == (BEATS if access_log == "1" else 0), len(answered)
        assert any(f'"POST /infra/workers/{wid}/heartbeat" 401' in x for x in lines)
        assert any(f'"POST /infra/workers/{wid}/heartbeat?..." 401' in x for x in lines)
        assert any("heartbeat for" in x and "refused" in x for x in lines)
        assert secret not in out
