"""`vectis dashboard migrate-store`: a fleet moves from SQLite to PostgreSQL; none re-registers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_dashboard_support import (
    ADMIN,
    dashboard,
    worker_daemon,
    worker_host,
)
from tests.pg import PgServer
from tests.support import free_port, run_cli

PASSWORD = "pg-password-never-shown"


def _move(data_dir: Path, url: str, *extra: str) -> tuple[int, str, str]:
    done = run_cli(
        ["dashboard", "migrate-store", "--to", url, *extra],
        env={"VECTIS_DATA_DIR": str(data_dir)},
    )
    return done.returncode, done.stdout, done.stderr


def test_a_fleet_moves_to_postgresql_and_keeps_heartbeating(
    tmp_path: Path, pg_server: PgServer
) -> None:
    port = free_port()
    host = worker_host(tmp_path / "w1")
    # The fleet on SQLite: a worker synced once, with a config; another one; a token.
    with dashboard(tmp_path, port=port, name="sqlite") as dash:
        status, reg = dash.register(
            host.secret, host.port, hostname="w1.test", labels={"role": "edge"}
        )
        assert status == 201, reg
        wid = reg["id"]
        host.enroll(wid, reg["subdomain"], dashboard_url=dash.url)
        with worker_daemon(host, tmp_path / "w1.log"):
            assert dash.sync(wid)["status"] == "synced"
        status, _ = dash.call("PUT", f"/infra/workers/{wid}/config", {"role": "edge"})
        assert status == 200
        group = {"selector": "role=edge", "priority": 3, "config": {"cache": "1g"}}
        assert dash.call("PUT", "/infra/config/groups/edge", group)[0] == 201
        other = worker_host(tmp_path / "w2")
        assert dash.register(other.secret, other.port)[0] == 201
        status, token = dash.call("POST", "/infra/tokens", {"description": "rack 7"})
        assert status == 201, token
        before = dash.worker(wid)
        data_dir = dash.data_dir

    url = pg_server.create_database().replace("postgres@", f"postgres:{PASSWORD}@")
    code, out, err = _move(data_dir, url, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["workers"], report["tokens"], report["workers_updated"]) == (2, 1, 0)
    assert (report["config_groups"], report["labels"]) == (1, 1), report
    assert report["history"] >= 3 and report["meta"] >= 2, report
    assert report["target"].startswith("postgresql://postgres:***@"), report
    assert PASSWORD not in out + err
    # Again: nothing doubles; the rows from the first run are brought up to date.
    code, out, err = _move(data_dir, url, "--json")
    assert code == 0, err
    again = json.loads(out)
    assert (again["workers"], again["workers_updated"], again["history"]) == (
        2,
        2,
        report["history"],
    )

    # The dashboard on PostgreSQL, on the same address, without the admin token given: the
    # moved admin token's hash lets the old token in.
    pg_env = {"VECTIS_DATABASE_URL": url, "VECTIS_ADMIN_TOKEN": ""}
    with dashboard(tmp_path / "pg", port=port, name="pg", **pg_env) as dash:
        moved = dash.worker(wid)
        assert moved == before  # every field, its labels, config (and sources) and history
        assert moved["config"] == {"cache": "1g", "role": "edge"}
        # Its labels select it there too, and a group changed there reaches it.
        status, page = dash.call("GET", "/infra/workers?selector=role%3Dedge")
        assert status == 200 and [w["id"] for w in page["workers"]] == [wid]
        group["config"] = {"cache": "2g"}
        status, changed = dash.call("PUT", "/infra/config/groups/edge", group)
        assert status == 200 and changed["reconfigured"] == 1, changed
        assert dash.worker(wid)["desired_revision"] == before["desired_revision"] + 1
        status, tokens = dash.call("GET", "/infra/tokens")
        assert status == 200 and [t["description"] for t in tokens["tokens"]] == ["rack 7"]
        # The worker heartbeats (`vectis sync`) with its old id and secret, and is synced.
        done = run_cli(["sync", "--json", "--ip", "127.0.0.9"], env=host.env())
        assert done.returncode == 0, done.stderr
        assert dash.worker(wid)["ip"] == "127.0.0.9"
        # Its secret registers as the same worker, not a new one.
        status, reg = dash.register(host.secret, host.port, ip="127.0.0.9")
        assert status == 200 and reg["id"] == wid
        # A worker, a token and a group that exist only in PostgreSQL: another move is
        # refused, unless forced.
        newcomer = worker_host(tmp_path / "w3")
        status, fresh = dash.register(newcomer.secret, newcomer.port)
        assert status == 201
        status, pg_token = dash.call("POST", "/infra/tokens", {"description": "pg only"})
        assert status == 201, pg_token
        pg_group = {"selector": "role=none", "priority": 0, "config": {"x": 1}}
        assert dash.call("PUT", "/infra/config/groups/pg-only", pg_group)[0] == 201
        code, out, err = _move(data_dir, url)
        assert code != 0 and "not in the source" in err and PASSWORD not in out + err
        code, out, err = _move(data_dir, url, "--force", "--json")
        assert code == 0, err
        assert json.loads(out)["foreign"] == [
            f"worker {fresh['id']} is not in the source",
            f"token {pg_token['id']} is not in the source",
            "config group pg-only is not in the source",
        ]
        status, listed = dash.call("GET", "/infra/workers")
        assert status == 200 and len(listed["workers"]) == 3
    assert ADMIN not in (tmp_path / "pg" / "pg.log").read_text()
