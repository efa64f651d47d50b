"""Labels and config groups end to end: a real dashboard and real worker daemons on loopback.

A group change reaches the labelled workers it selects and no other; a relabelled worker
leaves one group's config and gets another's; priorities and the worker's own config decide
the merge; a change that merges to the same config moves no revision; selectors filter the
list, the summary and the CLI; and on each selected worker the apply_file holds the merged
config and the apply_command ran once with it (issue 17, "Done when").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.integration.test_dashboard_support import (
    ADMIN,
    Dash,
    WorkerHost,
    dashboard,
    worker_daemon,
    worker_host,
)
from tests.support import run_cli
from vectis.configfile import locked_conf, read_conf

LABELS = {
    "edge-eu": {"role": "edge", "region": "eu"},
    "edge-us": {"role": "edge", "region": "us"},
    "edge-ap": {"role": "edge", "region": "ap"},
    "core-eu": {"role": "core", "region": "eu"},
    "bare": {},
}
EDGES = ("edge-eu", "edge-us", "edge-ap")


@contextmanager
def fleet(
    tmp: Path, dash: Dash, *, apply: bool = False
) -> Iterator[dict[str, tuple[str, WorkerHost]]]:
    """The five workers of LABELS registered with their labels, each with its daemon running;
    `apply`: each writes its applied config to an apply_file and runs an apply_command that
    records every run (revision and the JSON it read on stdin)."""
    found: dict[str, tuple[str, WorkerHost]] = {}
    with ExitStack() as stack:
        for name, labels in LABELS.items():
            host = worker_host(tmp / name)
            if apply:
                with locked_conf(host.conf_dir / "worker.conf") as conf:
                    conf.settings.apply_file = str(tmp / name / "applied.json")
                    conf.settings.apply_command = (
                        f'cat > "{tmp / name}/run-$VECTIS_REVISION.json" && '
                        f'echo "$VECTIS_REVISION $VECTIS_WORKER_ID" >> "{tmp / name}/runs"'
                    )
            status, reg = dash.register(host.secret, host.port, labels=labels)
            assert status == 201, reg
            host.enroll(reg["id"], reg["subdomain"])
            stack.enter_context(worker_daemon(host, tmp / f"{name}.log"))
            found[name] = (reg["id"], host)
        yield found


def ok(dash: Dash, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    got, doc = dash.call(method, path, body)
    assert got == status, (method, path, got, doc)
    return doc


def sync_all(dash: Dash) -> dict[str, Any]:
    return dict(ok(dash, "POST", "/infra/workers/sync"))


def until_synced(dash: Dash, seconds: float = 30) -> dict[str, Any]:
    """Sync every worker until all are synced (an apply command may still be running when a
    sync is answered: the worker says it is applying, and the next sync finds it done)."""
    deadline = time.monotonic() + seconds
    while True:
        counts = sync_all(dash)
        if counts["synced"] == counts["total"] or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def by_name(dash: Dash, ids: dict[str, tuple[str, WorkerHost]]) -> dict[str, dict[str, Any]]:
    return {name: dash.worker(wid) for name, (wid, _) in ids.items()}


def test_groups_reach_the_workers_they_select(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash, fleet(tmp_path, dash) as ids:
        assert sync_all(dash)["synced"] == 5
        # A group selecting the three edge workers: they alone get a new revision.
        body = {"selector": "role=edge", "priority": 10, "config": {"cache": "1g"}}
        doc = ok(dash, "PUT", "/infra/config/groups/edge", body, 201)
        assert (doc["name"], doc["selector"], doc["reconfigured"]) == ("edge", "role=edge", 3)
        workers = by_name(dash, ids)
        assert {n for n, w in workers.items() if w["status"] == "outdated"} == set(EDGES)
        assert sync_all(dash) == {"total": 5, "synced": 5, "failed": 0, "outdated": 0}
        workers = by_name(dash, ids)
        for name, (_, host) in ids.items():
            conf = read_conf(host.conf_dir / "worker.conf")
            expected = {"cache": "1g"} if name in EDGES else {}
            revision = 1 if name in EDGES else 0
            assert conf.config == expected and conf.state.applied_revision == revision, name
            assert workers[name]["applied_revision"] == revision, name
            assert workers[name]["config"] == expected
        assert workers["edge-eu"]["config_sources"] == {"cache": "group:edge"}
        assert workers["edge-eu"]["labels"] == LABELS["edge-eu"]
        shown = ok(dash, "GET", "/infra/config/groups/edge")
        assert shown["selected"] == 3 and shown["config"] == {"cache": "1g"}

        # The same group again merges to the same configs: no revision moves.
        doc = ok(dash, "PUT", "/infra/config/groups/edge", body)
        assert doc["reconfigured"] == 0
        assert {w["desired_revision"] for w in by_name(dash, ids).values()} == {0, 1}

        # A fleet-wide group under the edge group's priority, and a worker's own config over
        # both: the merge takes each key from the highest.
        every = {"selector": "", "priority": 0, "config": {"cache": "64m", "log": "info"}}
        assert ok(dash, "PUT", "/infra/config/groups/all", every, 201)["reconfigured"] == 5
        ok(dash, "PUT", f"/infra/workers/{ids['edge-us'][0]}/config", {"log": "debug"})
        workers = by_name(dash, ids)
        assert workers["edge-eu"]["config"] == {"cache": "1g", "log": "info"}
        assert workers["edge-us"]["config"] == {"cache": "1g", "log": "debug"}
        assert workers["edge-us"]["config_sources"] == {"cache": "group:edge", "log": "worker"}
        assert workers["edge-us"]["own_config"] == {"log": "debug"}
        assert workers["bare"]["config"] == {"cache": "64m", "log": "info"}
        assert workers["edge-us"]["desired_revision"] == 3
        # A change under the worker's own key leaves that worker's revision where it is.
        every["config"] = {"cache": "64m", "log": "warning"}
        assert ok(dash, "PUT", "/infra/config/groups/all", every)["reconfigured"] == 4
        assert dash.worker(ids["edge-us"][0])["desired_revision"] == 3

        # Relabelled: edge-ap leaves the edge group's config and gets the core group's.
        core = {"selector": "role=core", "priority": 10, "config": {"cache": "8g", "tier": "c"}}
        assert ok(dash, "PUT", "/infra/config/groups/core", core, 201)["reconfigured"] == 1
        wid = ids["edge-ap"][0]
        doc = ok(dash, "PUT", f"/infra/workers/{wid}/labels", {"role": "core"})
        assert doc["labels"] == {"role": "core"} and doc["status"] == "outdated"
        assert dash.sync(wid)["status"] == "synced"
        conf = read_conf(ids["edge-ap"][1].conf_dir / "worker.conf")
        assert conf.config == {"cache": "8g", "log": "warning", "tier": "c"}
        assert dash.worker(wid)["config_sources"] == {
            "cache": "group:core", "log": "group:all", "tier": "group:core"
        }  # fmt: skip

        # Deleted: the workers it selected lose its keys.
        doc = ok(dash, "DELETE", "/infra/config/groups/core")
        assert doc["deleted"] is True and doc["reconfigured"] == 2
        assert dash.worker(wid)["config"] == {"cache": "64m", "log": "warning"}
        assert dash.call("GET", "/infra/config/groups/core")[0] == 404
        names = [g["name"] for g in ok(dash, "GET", "/infra/config/groups")["groups"]]
        assert names == ["all", "edge"]


def test_selectors_filter_the_list_the_summary_and_the_cli(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        ids: dict[str, str] = {}
        for name, labels in LABELS.items():
            host = worker_host(tmp_path / name)
            status, reg = dash.register(host.secret, host.port, labels=labels)
            assert status == 201, reg
            ids[reg["id"]] = name

        def listed(query: str) -> list[str]:
            doc = ok(dash, "GET", f"/infra/workers?{query}")
            return [ids[w["id"]] for w in doc["workers"]]

        # In list order (registration time, then id), as every list.
        order = [ids[w["id"]] for w in ok(dash, "GET", "/infra/workers")["workers"]]
        edges = [n for n in order if n in EDGES]
        assert listed("selector=role%3Dedge") == edges
        assert listed("selector=role%3Dedge,region!%3Dus") == [n for n in edges if n != "edge-us"]
        # As typed, unencoded: the query's value runs to the next `&`.
        assert listed("selector=role=edge,region!=us") == [n for n in edges if n != "edge-us"]
        assert listed("selector=!role") == ["bare"]
        # With paging, two at a time, and with the other filters.
        page = ok(dash, "GET", "/infra/workers?selector=role%3D%3Dedge&limit=2")
        assert [ids[w["id"]] for w in page["workers"]] == edges[:2]
        rest = ok(dash, "GET", f"/infra/workers?selector=role%3Dedge&cursor={page['next_cursor']}")
        assert [ids[w["id"]] for w in rest["workers"]] == edges[2:]
        assert listed("selector=region%3Deu&q=nothing-matches") == []
        summary = ok(dash, "GET", "/infra/workers/summary?selector=region%3Deu")
        assert summary["total"] == 2 and summary["status"]["pending"] == 2
        # A selector that does not parse: a 400 that says why.
        for bad in ("role%3D%3D%3Dedge", "%3Dedge", "role%3Dbad%20value", "a,,b"):
            status, doc = dash.call("GET", f"/infra/workers?selector={bad}")
            assert status == 400 and doc["error"] == "bad_request", (bad, doc)
            assert doc["message"].startswith("'selector'"), doc
        status, doc = dash.call("PUT", f"/infra/workers/{next(iter(ids))}/labels", {"-x": "y"})
        assert status == 400 and "label key" in doc["message"], doc

        env = {"VECTIS_ADMIN_TOKEN": ADMIN, "VECTIS_DASHBOARD_URL": dash.url}
        done = run_cli(["dashboard", "workers", "list", "--selector", "role=edge", "--json"], env)
        assert done.returncode == 0, done.stderr
        assert [ids[w["id"]] for w in json.loads(done.stdout)["workers"]] == edges
        wide = {**env, "COLUMNS": "200"}  # room for the labels column
        done = run_cli(["dashboard", "workers", "list", "-l", "role=edge,region=us"], wide)
        assert done.returncode == 0 and "region=us,role=edge" in done.stdout, done.stdout
        done = run_cli(["dashboard", "workers", "list", "-l", "=edge"], env)
        assert done.returncode != 0 and "selector" in done.stderr and "Traceback" not in done.stderr
        bare = next(i for i, n in ids.items() if n == "bare")
        done = run_cli(["dashboard", "workers", "set-labels", bare, "role=edge", "--json"], env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["labels"] == {"role": "edge"}
        done = run_cli(["dashboard", "workers", "set-labels", bare, "role"], env)
        assert done.returncode != 0 and "KEY=VALUE" in done.stderr, done.stderr

        # Groups from the CLI: set (config from stdin), list, show, delete.
        done = run_cli(
            ["dashboard", "groups", "set", "edge", "-", "--selector", "role=edge",
             "--priority", "5", "--json"],
            env,
            input='{"cache": "2g"}',
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["reconfigured"] == 4
        done = run_cli(["dashboard", "groups", "list", "--json"], env)
        assert [g["name"] for g in json.loads(done.stdout)["groups"]] == ["edge"]
        done = run_cli(["dashboard", "groups", "show", "edge"], env)
        assert done.returncode == 0 and "role=edge" in done.stdout and "4 worker" in done.stdout
        done = run_cli(["dashboard", "groups", "show", "nope"], env)
        assert done.returncode != 0 and "no config group 'nope'" in done.stderr, done.stderr
        done = run_cli(["dashboard", "groups", "delete", "edge"], env)  # no terminal: no
        assert done.returncode == 2 and "config group edge without confirmation" in done.stderr
        assert run_cli(["dashboard", "groups", "show", "edge"], env).returncode == 0
        done = run_cli(["dashboard", "groups", "delete", "edge", "--yes", "--json"], env)
        assert done.returncode == 0 and json.loads(done.stdout)["deleted"] is True
        done = run_cli(["dashboard", "groups", "set", "Bad_Name", "-"], env, input="{}")
        assert done.returncode != 0 and "group name 'Bad_Name'" in done.stderr, done.stderr


def test_apply_hooks_render_the_merged_config_on_the_selected_workers(tmp_path: Path) -> None:
    """A group change reaches 3 labelled workers out of 5: on each the apply_file holds the
    merged config and the apply_command ran once with it; all three end synced."""
    with dashboard(tmp_path) as dash, fleet(tmp_path, dash, apply=True) as ids:
        ok(dash, "PUT", f"/infra/workers/{ids['edge-eu'][0]}/config", {"own": 1})
        assert until_synced(dash)["synced"] == 5
        runs_before = {
            name: (tmp_path / name / "runs").read_text().splitlines()
            if (tmp_path / name / "runs").exists() else []
            for name in LABELS
        }  # fmt: skip
        body = {"selector": "role=edge", "priority": 1, "config": {"upstream": "10.0.0.9:80"}}
        assert ok(dash, "PUT", "/infra/config/groups/edge", body, 201)["reconfigured"] == 3
        assert until_synced(dash) == {"total": 5, "synced": 5, "failed": 0, "outdated": 0}
        for name, (wid, _) in ids.items():
            runs_file = tmp_path / name / "runs"
            runs = runs_file.read_text().splitlines() if runs_file.exists() else []
            new_runs = runs[len(runs_before[name]) :]
            worker = dash.worker(wid)
            if name not in EDGES:
                assert new_runs == [], name
                continue
            merged = {"upstream": "10.0.0.9:80", **({"own": 1} if name == "edge-eu" else {})}
            revision = worker["desired_revision"]
            assert worker["status"] == "synced" and worker["applied_revision"] == revision
            applied = json.loads((tmp_path / name / "applied.json").read_text())
            assert applied == merged, name
            assert new_runs == [f"{revision} {wid}"], (name, runs)
            ran_with = json.loads((tmp_path / name / f"run-{revision}.json").read_text())
            assert ran_with == merged, name
