"""GET /infra/workers from a real dashboard: each listed worker is exactly what its own page says.

The list is rendered by SQLite and kept between calls; `GET /infra/workers/<id>` renders the
same worker in Python. After every kind of write, through the API, the next list must match
the per-worker answers field for field, in order, for every `?status=` filter.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from tests.integration.test_dashboard_support import ADMIN, Dash, dashboard
from tests.support import free_port, http
from vectis.crypto.signing import new_nonce, sign_request

STATUSES = (None, "pending", "synced", "failed", "outdated")


def listed(dash: Dash, status: str | None = None) -> list[dict[str, Any]]:
    path = "/infra/workers" + (f"?status={status}" if status else "")
    code, headers, raw = http("GET", dash.url + path, None, {"Authorization": f"Bearer {ADMIN}"})
    assert code == 200, raw
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    return list(json.loads(raw)["workers"])


def assert_list_matches_each_worker(dash: Dash) -> list[dict[str, Any]]:
    everyone = listed(dash)
    pages = {}
    for w in everyone:
        page = dash.worker(w["id"])
        for detail in ("config", "own_config", "config_sources", "history"):
            page.pop(detail)
        pages[w["id"]] = page
        assert list(w) == list(page), w["id"]  # same fields, same order
        assert w == page
    for status in STATUSES[1:]:
        want = [w for w in everyone if w["status"] == status]
        assert listed(dash, status) == want, status
    return everyone


def heartbeat(dash: Dash, worker_id: str, secret: str, body: dict[str, Any]) -> None:
    path = f"/infra/workers/{worker_id}/heartbeat"
    raw = json.dumps(body).encode()
    auth = sign_request(
        bytes.fromhex(secret), worker_id, "POST", path, raw, ts=int(time.time()),
        nonce=new_nonce(os.urandom),
    )  # fmt: skip
    code, _, answer = http(
        "POST", dash.url + path, raw, {"Authorization": auth, "Content-Type": "application/json"}
    )
    assert code == 200, answer


def test_the_list_is_each_workers_own_answer_after_every_write(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        assert listed(dash) == []
        secret_of: dict[str, str] = {}
        dead_port = free_port()
        for i in range(24):
            secret = secrets.token_hex(32)
            extra: dict[str, Any] = {"hostname": f"h\u00f6st-{i}-\u65e5\u672c"} if i % 2 else {}
            if i % 3 == 0:
                extra["version"] = f'1.{i} "q" \\ \U0001f680'
            code, doc = dash.register(secret, dead_port + i % 5, ip=f"127.0.{i}.9", **extra)
            assert code == 201, doc
            secret_of[doc["id"]] = secret
        ids = [w["id"] for w in assert_list_matches_each_worker(dash)]
        assert sorted(ids) == sorted(secret_of)

        # Each status: failed (nobody answers), synced (a heartbeat), then outdated (a config).
        for wid in ids[:6]:
            assert dash.sync(wid)["status"] == "failed"
            assert wid in {w["id"] for w in listed(dash, "failed")}
        for n, wid in enumerate(ids[6:16]):
            heartbeat(dash, wid, secret_of[wid], {"ip": f"127.1.{n}.9", "version": "2.0"})
            after = {w["id"]: w for w in listed(dash)}[wid]
            assert (after["status"], after["ip"]) == ("synced", f"127.1.{n}.9")
        for wid in ids[6:10]:
            code, doc = dash.call("PUT", f"/infra/workers/{wid}/config", {"x": "\u2603"})
            assert code == 200, doc
            assert {w["id"]: w for w in listed(dash)}[wid]["status"] == "outdated"
        everyone = assert_list_matches_each_worker(dash)
        assert {w["status"] for w in everyone} == {"pending", "synced", "failed", "outdated"}

        # A delete and a re-registration show in the very next list.
        assert dash.call("DELETE", f"/infra/workers/{ids[0]}")[0] == 200
        assert ids[0] not in {w["id"] for w in listed(dash)}
        code, doc = dash.register(secret_of[ids[1]], dead_port, ip="127.9.9.9", hostname="moved")
        assert code == 200 and doc["id"] == ids[1]
        moved = {w["id"]: w for w in listed(dash)}[ids[1]]
        assert (moved["ip"], moved["hostname"]) == ("127.9.9.9", "moved")
        assert_list_matches_each_worker(dash)

        code, doc = dash.call("GET", "/infra/workers?status=bogus")
        assert code == 400 and doc["error"] == "bad_request"
