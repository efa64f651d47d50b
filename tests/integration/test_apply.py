"""Issue 17, the worker's side: a pushed config written to `apply_file`, `apply_command` run with
it, and the outcome on the dashboard. Real dashboard, worker daemon and shell commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.integration.test_dashboard_support import (
    Dash,
    WorkerHost,
    dashboard,
    worker_daemon,
    worker_host,
)
from tests.support import run_cli, until
from vectis.configfile import locked_conf, read_conf

# The command logs what it was given (revision, worker id, the file's path, stdin) and exits 0.
GOOD = """\
{{ echo "run rev=$VECTIS_REVISION id=$VECTIS_WORKER_ID file=$VECTIS_APPLY_FILE"; cat; echo; \
}} >> {log}
"""
# The command a bad config makes fail: two lines on stderr, exit 1. Each attempt is counted.
BAD = """\
echo attempt >> {attempts}
echo "nginx: [emerg] unknown directive \\"bogus\\" in app.conf:3" >&2
echo "nginx: configuration file app.conf test failed" >&2
exit 1
"""


def _apply_host(tmp_path: Path, **settings: Any) -> WorkerHost:
    host = worker_host(tmp_path / "w1")
    with locked_conf(host.conf_dir / "worker.conf") as conf:
        for key, value in settings.items():
            setattr(conf.settings, key, value)
    return host


def _registered(dash: Dash, host: WorkerHost) -> str:
    status, reg = dash.register(host.secret, host.port)
    assert status == 201, reg
    host.enroll(reg["id"], reg["subdomain"])
    return str(reg["id"])


def _set_config(dash: Dash, wid: str, config: dict[str, Any]) -> int:
    status, doc = dash.call("PUT", f"/infra/workers/{wid}/config", config)
    assert status == 200 and doc["status"] == "outdated", doc
    return int(doc["desired_revision"])


def _config_show(host: WorkerHost) -> dict[str, Any]:
    done = run_cli(["config", "show", "--json"], env=host.env())
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_apply_file_and_command_a_failure_its_retry_and_the_fix(tmp_path: Path) -> None:
    script, log, attempts = tmp_path / "apply.sh", tmp_path / "ran.log", tmp_path / "attempts"
    script.write_text(GOOD.format(log=log))
    target = tmp_path / "service" / "app.json"
    target.parent.mkdir()
    host = _apply_host(tmp_path, apply_file=str(target), apply_command=f"sh {script}")
    with dashboard(tmp_path) as dash, worker_daemon(host, tmp_path / "w1.log") as wproc:
        wid = _registered(dash, host)
        assert dash.sync(wid)["status"] == "synced"  # revision 0: nothing to apply
        assert not target.exists() and not log.exists()

        # Revision 1: the file holds the config, the command ran once with it on stdin.
        first = {"role": "edge", "upstreams": ["10.0.0.1:8080", "10.0.0.2:8080"]}
        assert _set_config(dash, wid, first) == 1
        doc = until(lambda: (d := dash.sync(wid))["status"] == "synced" and d, "revision 1")
        assert doc["applied_revision"] == 1 and doc["last_error"] is None
        assert json.loads(target.read_text()) == first
        assert target.stat().st_mode & 0o777 == 0o600
        runs = log.read_text().split("run ")[1:]
        assert len(runs) == 1, runs
        head, _, stdin = runs[0].partition("\n")
        assert head == f"rev=1 id={wid} file={target}"
        assert json.loads(stdin) == first
        conf = read_conf(host.conf_dir / "worker.conf")
        assert conf.config == first and conf.state.applied_revision == 1
        assert conf.state.apply_error is None and conf.state.pending_revision is None
        dash.sync(wid)
        assert len(log.read_text().split("run ")[1:]) == 1  # an applied revision is not rerun

        # Revision 2 with a command that fails: outdated with its cause, the old file in place.
        script.write_text(BAD.format(attempts=attempts))
        second = {"role": "edge", "upstreams": ["10.0.0.3:8080"]}
        assert _set_config(dash, wid, second) == 2
        doc = until(
            lambda: (
                (d := dash.sync(wid))["last_error"]
                and not d["last_error"].endswith("retrying")
                and d
            ),
            "the failed apply reported",
        )
        assert doc["status"] == "outdated" and doc["applied_revision"] == 1, doc
        assert doc["last_error"] == (
            'apply failed: exit 1: nginx: [emerg] unknown directive "bogus" in app.conf:3'
            " | nginx: configuration file app.conf test failed"
        )
        assert json.loads(target.read_text()) == first
        conf = read_conf(host.conf_dir / "worker.conf")
        assert conf.state.applied_revision == 1 and conf.config == first
        assert conf.state.pending_revision == 2 and conf.pending_config == second
        assert conf.state.apply_error and conf.state.apply_error.startswith("exit 1: nginx:")
        shown = _config_show(host)
        assert shown["applied_revision"] == 1 and shown["config"] == first
        assert shown["pending_revision"] == 2 and shown["pending_config"] == second
        assert shown["apply_error"] == conf.state.apply_error
        done = run_cli(["status", "--json"], env=host.env())
        status = json.loads(done.stdout)
        assert status["apply_error"] == conf.state.apply_error, status

        # The next sync that carries revision 2 tries again (not sooner than the retry pause).
        tries = len(attempts.read_text().split())
        until(
            lambda: dash.sync(wid) and len(attempts.read_text().split()) > tries,
            "a retry",
            timeout=20,
        )
        assert dash.worker(wid)["last_error"].startswith("apply failed: exit 1: ")

        # Fixed: the next sync applies revision 2 and the worker ends synced, error cleared.
        script.write_text(GOOD.format(log=log))
        doc = until(lambda: (d := dash.sync(wid))["status"] == "synced" and d, "revision 2")
        assert doc["applied_revision"] == 2 and doc["last_error"] is None
        assert json.loads(target.read_text()) == second
        conf = read_conf(host.conf_dir / "worker.conf")
        assert conf.state.apply_error is None and conf.state.pending_revision is None
        assert conf.config == second
        causes = [h["cause"] for h in dash.worker(wid)["history"]]
        assert "applied config revision 2" in causes
        wproc.stop()
        assert "config revision 2 not applied: exit 1" in wproc.output


def _gone(pid: int) -> bool:
    """Whether the process is gone (a zombie nobody reaped counts as gone: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_slow_command_neither_holds_the_answer_nor_outlives_its_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell and a child it starts in the background: both must go when the time is up.
    command = f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; echo slow >&2; wait"
    target = tmp_path / "app.json"
    target.write_text('{"before": true}\n')
    os.chmod(target, 0o644)
    host = _apply_host(tmp_path, apply_file=str(target), apply_command=command, apply_timeout=3)
    # The dashboard gives each sync 2 s: less than the command takes before it is killed.
    with dashboard(tmp_path) as dash, worker_daemon(host, tmp_path / "w1.log"):
        wid = _registered(dash, host)
        assert dash.sync(wid)["status"] == "synced"
        assert _set_config(dash, wid, {"slow": True}) == 1
        started = time.monotonic()
        doc = dash.sync(wid)
        # Answered while the command still runs: reached, behind, and no error yet.
        assert doc["status"] == "outdated" and doc["last_error"] is None, doc
        assert doc["consecutive_failures"] == 0
        shells = until(lambda: pids.exists() and len(pids.read_text().split()) == 2, "pids")
        assert shells
        child, shell = (int(p) for p in pids.read_text().split())
        assert json.loads(target.read_text()) == {"slow": True}  # the command sees the new file
        doc = until(
            lambda: (d := dash.sync(wid))["last_error"] and d, "the timeout reported", timeout=20
        )
        assert time.monotonic() - started >= 3
        assert doc["status"] == "outdated"
        assert doc["last_error"] == "apply failed: timed out after 3s: slow", doc
        until(lambda: _gone(child) and _gone(shell), "the process group killed", timeout=10)
        assert json.loads(target.read_text()) == {"before": True}
        assert target.stat().st_mode & 0o777 == 0o644


def test_register_sends_labels_and_keeps_them_in_worker_conf(tmp_path: Path) -> None:
    from tests.integration.test_dashboard_support import ENROLL

    host = worker_host(tmp_path / "w1")
    with dashboard(tmp_path) as dash:
        env = host.env(VECTIS_TOKEN=ENROLL, VECTIS_LABELS="role=db", VECTIS_IP_DNS_SERVER="off")
        args = ["register", "--dashboard-url", dash.url, "--ip", "127.0.0.1", "--json"]
        bad = run_cli([*args, "--label", "role=edge", "--label", "bad key=x"], env=env)
        assert bad.returncode == 3 and bad.stderr.count("\n") == 1, bad.stderr
        assert "--label: " in bad.stderr and "Traceback" not in bad.stderr
        assert not read_conf(host.conf_dir / "worker.conf").registered
        done = run_cli([*args, "--label", "role=edge", "--label", "region=eu"], env=env)
        assert done.returncode == 0, done.stderr
        conf = read_conf(host.conf_dir / "worker.conf")
        assert conf.labels == {"role": "edge", "region": "eu"}  # the flags win over the variable
        wid = json.loads(done.stdout)["id"]
        assert dash.worker(wid)["labels"] == {"role": "edge", "region": "eu"}
        # Registering again without flags sends the variable's labels, and keeps them.
        again = run_cli(args, env=env)
        assert again.returncode == 0, again.stderr
        assert read_conf(host.conf_dir / "worker.conf").labels == {"role": "db"}
        assert dash.worker(wid)["labels"] == {"role": "db"}
