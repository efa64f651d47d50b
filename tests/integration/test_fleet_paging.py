"""The admin list for a large fleet, against a real dashboard: keyset pages, search, the
summary, and a sync of the whole fleet as a background job with its progress."""

from __future__ import annotations

import itertools
import json
import secrets
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_dashboard_support import ADMIN, Dash, dashboard
from tests.support import VECTIS, child_env, http, run_cli, until

_ports = itertools.count(20_000)


def register(dash: Dash, n: int, **extra: Any) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        port = next(_ports)
        status, doc = dash.register(secrets.token_hex(32), port, **extra)
        assert status == 201, doc
        out.append(doc)
    return out


def page(dash: Dash, query: str) -> dict[str, Any]:
    status, doc = dash.call("GET", f"/infra/workers?{query}")
    assert status == 200, doc
    assert set(doc) == {"workers", "next_cursor"}
    return dict(doc)


def test_pages_miss_and_repeat_no_worker_while_the_fleet_changes(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        first = register(dash, 40)
        stable = {w["id"] for w in first}
        seen: list[str] = []
        deleted: set[str] = set()
        cursor = ""
        turn = 0
        while True:
            doc = page(dash, f"limit=7&cursor={cursor}")
            ids = [w["id"] for w in doc["workers"]]
            assert len(ids) <= 7
            seen += ids
            # Between pages: workers join, some leave (seen and not yet seen), some change.
            register(dash, 2)
            unseen = sorted(stable - set(seen) - deleted)
            for gone in ([seen[0]] if turn == 1 else []) + unseen[:1]:
                assert dash.call("DELETE", f"/infra/workers/{gone}")[0] == 200
                deleted.add(gone)
            if unseen[1:2]:
                assert dash.call("PUT", f"/infra/workers/{unseen[1]}/config", {"k": turn})[0] == 200
            turn += 1
            cursor = doc["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "a worker was repeated"
        assert stable - deleted <= set(seen), "a worker present throughout was missed"
        # In list order, like the whole list; the last page has no cursor.
        listed = dash.call("GET", "/infra/workers")[1]["workers"]
        whole = [w["id"] for w in listed]
        assert [i for i in whole if i in set(seen)] == [i for i in seen if i in set(whole)]


def test_filters_search_and_bad_queries(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        web = register(dash, 3, hostname="web-frontend.example")
        register(dash, 5, hostname="db.example", ip="127.0.9.9")
        target = web[1]
        # Search by a part of the id, the subdomain, the hostname or the IP, any case.
        for q in (target["id"][3:12], target["id"].upper(), "FRONTEND", "127.0.9"):
            doc = page(dash, f"q={q}")
            ids = {w["id"] for w in doc["workers"]}
            if q == "127.0.9":
                assert len(ids) == 5 and target["id"] not in ids
            elif q == "FRONTEND":
                assert ids == {w["id"] for w in web}
            else:
                assert target["id"] in ids
            assert doc["next_cursor"] is None  # no limit: every match
        # LIKE's wildcards match themselves only.
        assert page(dash, "q=%25")["workers"] == [] and page(dash, "q=_")["workers"] == []
        assert dash.sync(target["id"])["status"] == "failed"  # nothing listens on its port
        failed = page(dash, "status=failed&limit=50")["workers"]
        assert [w["id"] for w in failed] == [target["id"]]
        assert len(page(dash, "dns_status=none")["workers"]) == 8
        assert page(dash, "dns_status=pending")["workers"] == []
        for query, field in (
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("cursor=bm9wZQ", "cursor"),
            ("status=lost&limit=5", "status"),
            ("dns_status=x", "dns_status"),
            ("q=%1b%5b2J", "q"),
        ):
            status, doc = dash.call("GET", f"/infra/workers?{query}")
            assert status == 400 and field in doc["message"], (query, doc)


def test_the_summary_counts_the_fleet(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        workers = register(dash, 6)
        for w in workers[:2]:
            assert dash.sync(w["id"])["status"] == "failed"  # nothing listens on its port
        status, doc = dash.call("GET", "/infra/workers/summary")
        assert status == 200
        assert doc == {
            "total": 6,
            "status": {"pending": 4, "synced": 0, "failed": 2, "outdated": 0},
            "dns_status": {"none": 6, "pending": 0, "synced": 0, "failed": 0},
        }
        assert dash.call("GET", "/infra/workers/summary", token=None)[0] == 401


@contextmanager
def silent_ports(n: int) -> Iterator[list[int]]:
    """Ports that accept a connection and never answer: each sync of them waits its timeout."""
    socks = [socket.create_server(("127.0.0.1", 0), backlog=16) for _ in range(n)]
    try:
        yield [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_sync_all_as_a_job_with_progress(tmp_path: Path) -> None:
    with (
        dashboard(tmp_path, VECTIS_SYNC_TIMEOUT="1", VECTIS_SYNC_CONCURRENCY="2") as dash,
        silent_ports(6) as ports,
    ):
        for port in ports:
            assert dash.register(secrets.token_hex(32), port)[0] == 201
        started = time.monotonic()
        status, job = dash.call("POST", "/infra/workers/sync?background=true")
        assert status == 202 and job["state"] == "running", job
        assert time.monotonic() - started < 1.0, "a background sync answers at once"
        # A second request joins the job that runs.
        status, again = dash.call("POST", "/infra/workers/sync?background=true")
        assert status == 202 and again["id"] == job["id"]
        # Progress moves while it runs: 6 silent workers, 2 at a time, 1 s each.
        partial = until(
            lambda: (
                (d := dash.call("GET", f"/infra/jobs/{job['id']}")[1])["state"] == "running"
                and 0 < d["done"] < d["total"]
                and d
            ),
            "a job part-way done",
            timeout=10,
        )
        assert partial["total"] == 6 and partial["failed"] == partial["done"]
        final = until(
            lambda: (d := dash.call("GET", f"/infra/jobs/{job['id']}")[1])["state"] == "done" and d,
            "the job to end",
            timeout=15,
        )
        assert final["done"] == final["total"] == final["failed"] == 6
        assert final["finished_at"] is not None and final["error"] is None
        assert dash.call("GET", "/infra/jobs/000000000000")[0] == 404
        assert dash.call("POST", "/infra/workers/sync?background=maybe")[0] == 400
        # Without background, the call still answers at the end with the counts.
        status, counts = dash.call("POST", "/infra/workers/sync")
        assert status == 200 and counts == {"total": 6, "synced": 0, "failed": 6, "outdated": 0}


def _cli(dash: Dash, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"VECTIS_DASHBOARD_URL": dash.url, "VECTIS_ADMIN_TOKEN": ADMIN}
    return run_cli(["dashboard", "workers", *args], env=env)


def test_the_cli_pages_through_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vectis.cli import admin
    from vectis.cli.main import main

    with dashboard(tmp_path) as dash:
        register(dash, 7, hostname="edge.example")
        register(dash, 2, hostname="core.example")
        listed = dash.call("GET", "/infra/workers")[1]["workers"]
        whole = [w["id"] for w in listed]
        core = [w["id"] for w in listed if w["hostname"] == "core.example"]
        # Pages of three: the CLI follows the cursors to the end, in list order.
        monkeypatch.setattr(admin, "PAGE", 3)
        monkeypatch.setattr(admin, "SUMMARY_FIRST", 4)
        monkeypatch.setenv("VECTIS_DASHBOARD_URL", dash.url)
        monkeypatch.setenv("VECTIS_ADMIN_TOKEN", ADMIN)
        monkeypatch.setenv("COLUMNS", "200")
        for args, expected in (
            ([], whole),
            (["--limit", "4"], whole[:4]),
            (["--search", "CORE"], core),
        ):
            with pytest.raises(SystemExit) as done:
                main(["dashboard", "workers", "list", "--json", *args])
            assert done.value.code == 0
            doc = json.loads(capsys.readouterr().out)
            assert [w["id"] for w in doc["workers"]] == expected, args
        # For people, a long list starts with the fleet's counts.
        with pytest.raises(SystemExit):
            main(["dashboard", "workers", "list"])
        out = capsys.readouterr().out
        assert "the fleet" in out and "status pending" in out and "9 worker(s)" in out


def test_sync_all_on_a_terminal_draws_progress_and_json_stays_exact(tmp_path: Path) -> None:
    with (
        dashboard(tmp_path, VECTIS_SYNC_TIMEOUT="1", VECTIS_SYNC_CONCURRENCY="1") as dash,
        silent_ports(3) as ports,
    ):
        for port in ports:
            assert dash.register(secrets.token_hex(32), port)[0] == 201
        # A pseudo-terminal, as an operator has: `script` runs the command on one.
        command = " ".join(shlex.quote(a) for a in [*VECTIS, "dashboard", "workers", "sync-all"])
        env = child_env({"VECTIS_DASHBOARD_URL": dash.url, "VECTIS_ADMIN_TOKEN": ADMIN})
        shown = subprocess.run(
            ["script", "-qec", command, "/dev/null"],
            env={**env, "COLUMNS": "100", "TERM": "xterm"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 11, shown.stdout
        assert "syncing" in shown.stdout and "/3" in shown.stdout, shown.stdout
        assert "failed     3" in shown.stdout and "total      3" in shown.stdout
        quiet = _cli(dash, "sync-all", "--json")
        assert quiet.returncode == 11
        assert json.loads(quiet.stdout) == {"total": 3, "synced": 0, "failed": 3, "outdated": 0}
        assert quiet.stderr == ""


def test_an_unchanged_page_or_summary_is_a_304(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        workers = register(dash, 3)
        auth = {"Authorization": f"Bearer {ADMIN}"}
        failed: set[str] = set()
        for path in ("/infra/workers?limit=2", "/infra/workers/summary", "/infra/workers"):
            status, headers, body = http("GET", dash.url + path, headers=auth)
            tag = {k.lower(): v for k, v in headers.items()}["etag"]
            assert status == 200 and body and tag, path
            again = http("GET", dash.url + path, headers={**auth, "If-None-Match": tag})
            assert again[0] == 304 and again[2] == b"", path
            # A change makes a new answer with a new tag: a worker it shows, failed anew.
            shown = [w["id"] for w in json.loads(body).get("workers", workers)]
            target = next(i for i in shown if i not in failed)
            assert dash.sync(target)["status"] == "failed"
            failed.add(target)
            status, headers, changed = http(
                "GET", dash.url + path, headers={**auth, "If-None-Match": tag}
            )
            new_tag = {k.lower(): v for k, v in headers.items()}["etag"]
            assert status == 200 and new_tag != tag and changed != body, path
