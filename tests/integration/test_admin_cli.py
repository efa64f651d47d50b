"""The operator commands (`vectis dashboard workers|tokens ...`) against a real dashboard process.

Workers are registered through the real auto-register API; a synced one is answered by the
fleet simulator (bench/fleet.py) running as its own process on loopback.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support import (
    Proc,
    child_env,
    free_port,
    http,
    run_cli,
    running,
    wait_ready,
    wildcard_port,
)
from vectis import __version__
from vectis.cli import humanize as hz
from vectis.configfile import locked_conf
from vectis.crypto.secrets import create_secret_file

ROOT = Path(__file__).resolve().parents[2]
ADMIN = secrets.token_urlsafe(24)
ENROLL = secrets.token_urlsafe(24)


class Dashboard:
    def __init__(self, url: str, data: Path) -> None:
        self.url = url
        self.data = data

    def register(
        self,
        secret: str | None = None,
        ip: str = "127.0.0.1",
        port: int | None = None,
        token: str = ENROLL,
        **extra: Any,
    ) -> tuple[int, Any]:
        body = {"ip": ip, "secret": secret or secrets.token_hex(32), "port": port or free_port()}
        body.update(extra)
        status, _, raw = http(
            "POST",
            f"{self.url}/infra/workers/auto-register",
            body,
            {"Authorization": f"Bearer {token}"},
        )
        return status, json.loads(raw) if raw else None

    def new_worker(self, **kw: Any) -> str:
        status, doc = self.register(**kw)
        assert status == 201, doc
        return str(doc["id"])

    def cli(
        self,
        *args: str,
        token: str | None = ADMIN,
        input: str = "",
        url: str | None = None,
        columns: int = 200,
    ) -> subprocess.CompletedProcess[str]:
        env = {"COLUMNS": str(columns)}  # rich's width; a pipe's default is 80
        if token is not None:
            env["VECTIS_ADMIN_TOKEN"] = token
        return run_cli(["dashboard", *args, "--url", url or self.url], env=env, input=input)


def _start(tmp: Path) -> Iterator[Dashboard]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "VECTIS_ADMIN_TOKEN": ADMIN,
        "VECTIS_TOKEN": ENROLL,
        "VECTIS_SYNC_INTERVAL": "0",
        "VECTIS_SYNC_TIMEOUT": "2",
        "VECTIS_DATA_DIR": str(tmp / "data"),
    }
    args = ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, ready_url=f"{url}/healthz", log=tmp / "dashboard.log", env=env):
        yield Dashboard(url, tmp / "data")


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """One dashboard for the module; every test registers workers of its own."""
    yield from _start(tmp_path_factory.mktemp("dash"))


@pytest.fixture
def own_dash(tmp_path: Path) -> Iterator[Dashboard]:
    """A dashboard of the test's own, for fleet-wide outcomes."""
    yield from _start(tmp_path)


@pytest.fixture
def fleet_worker(tmp_path: Path) -> Iterator[Any]:
    """Start the simulated worker for a registration: call it with (dashboard) -> worker id."""
    procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(d: Dashboard) -> str:
        # bench/fleet.py binds 0.0.0.0 a moment later
        port, secret = wildcard_port(), secrets.token_hex(32)
        worker_id = d.new_worker(secret=secret, port=port)
        roster = tmp_path / f"roster-{port}.json"
        roster.write_text(
            json.dumps([{"id": worker_id, "ip": "127.0.0.1", "port": port, "secret": secret}])
        )
        log_path = tmp_path / f"fleet-{port}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "fleet.py"),
                "--roster",
                str(roster),
                "--processes",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env({"PYTHONPATH": str(ROOT)}),
        )
        procs.append((proc, log))
        wait_ready(f"http://127.0.0.1:{port}/healthz", Proc(proc, log_path))
        return worker_id

    yield start
    for proc, log in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        log.close()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The failed command wrote exactly one line on stderr; on stdout nothing, or with --json
    one error document saying the same."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    if "--json" in result.args:
        doc = json.loads(result.stdout)
        assert set(doc) == {"error", "message"} and lines[0].endswith(doc["message"]), doc
    else:
        assert result.stdout == ""
    return lines[0]


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    """stdout is one JSON document and nothing else."""
    return json.loads(result.stdout)


def test_list_and_show(dash: Dashboard) -> None:
    secret = secrets.token_hex(32)
    worker_id = dash.new_worker(secret=secret)

    listed = dash.cli("workers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    workers = {w["id"]: w for w in as_json(listed)["workers"]}
    assert workers[worker_id]["status"] == "pending"
    assert workers[worker_id]["ip"] == "127.0.0.1"

    pending = as_json(dash.cli("workers", "list", "--status", "pending", "--json"))
    assert worker_id in {w["id"] for w in pending["workers"]}
    synced = as_json(dash.cli("workers", "list", "--status", "synced", "--json"))
    assert worker_id not in {w["id"] for w in synced["workers"]}

    shown = dash.cli("workers", "show", worker_id, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = as_json(shown)
    assert doc["id"] == worker_id
    assert doc["subdomain"].startswith(worker_id)
    assert isinstance(doc["history"], list)

    table = dash.cli("workers", "list")
    assert table.returncode == 0 and worker_id in table.stdout
    fields = dash.cli("workers", "show", worker_id)
    assert fields.returncode == 0 and worker_id in fields.stdout and "pending" in fields.stdout

    for result in (listed, shown, table, fields):
        assert secret not in result.stdout + result.stderr
        assert ADMIN not in result.stdout + result.stderr


def test_show_marks_a_version_other_than_the_dashboards(dash: Dashboard) -> None:
    old = dash.new_worker(version="0.0.1")
    current = dash.new_worker(version=__version__)
    shown = dash.cli("workers", "show", old)
    assert shown.returncode == 0, shown.stderr
    assert "0.0.1 (not the dashboard's version: reinstall with its install.sh)" in shown.stdout
    assert as_json(dash.cli("workers", "show", old, "--json"))["version_current"] is False
    same = dash.cli("workers", "show", current)
    assert same.returncode == 0 and __version__ in same.stdout
    assert "not the dashboard's version" not in same.stdout


def test_bad_status_filter_is_a_usage_error(dash: Dashboard) -> None:
    line = one_line_error(result := dash.cli("workers", "list", "--status", "happy"))
    assert result.returncode == 2 and "--status" in line


def test_set_config_from_file_and_stdin(dash: Dashboard, tmp_path: Path) -> None:
    worker_id = dash.new_worker()
    before = as_json(dash.cli("workers", "show", worker_id, "--json"))["desired_revision"]

    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"motd": "hello", "limits": {"cpu": 2}}))
    result = dash.cli("workers", "set-config", worker_id, "--file", str(conf), "--json")
    assert result.returncode == 0, result.stderr
    assert as_json(result)["desired_revision"] == before + 1

    result = dash.cli("workers", "set-config", worker_id, "-", "--json", input='{"motd": "x"}')
    assert result.returncode == 0, result.stderr
    assert as_json(result)["desired_revision"] == before + 2
    shown = as_json(dash.cli("workers", "show", worker_id, "--json"))
    assert shown["desired_revision"] == before + 2


def test_bad_config_is_refused_before_sending(dash: Dashboard, tmp_path: Path) -> None:
    worker_id = dash.new_worker()
    before = as_json(dash.cli("workers", "show", worker_id, "--json"))["desired_revision"]
    for name, text, expect in [
        ("broken.json", "{not json", "not valid JSON"),
        ("list.json", "[1, 2]", "JSON object"),
        ("empty.json", "", "not valid JSON"),
        ("missing.json", None, "No such file"),
    ]:
        conf = tmp_path / name
        if text is not None:
            conf.write_text(text)
        result = dash.cli("workers", "set-config", worker_id, "--file", str(conf))
        assert result.returncode == 2, result.stderr
        line = one_line_error(result)
        assert expect in line and str(conf) in line
    after = as_json(dash.cli("workers", "show", worker_id, "--json"))["desired_revision"]
    assert after == before


def test_sync_unreachable_worker_fails(dash: Dashboard) -> None:
    worker_id = dash.new_worker(port=free_port())  # nothing listens there
    result = dash.cli("workers", "sync", worker_id, "--json")
    assert result.returncode == 11, result.stderr
    doc = as_json(result)
    assert doc["status"] == "failed"
    assert doc["last_error"]
    assert doc["consecutive_failures"] >= 1


def test_sync_reachable_worker_is_synced_with_stats(dash: Dashboard, fleet_worker: Any) -> None:
    worker_id = fleet_worker(dash)
    result = dash.cli("workers", "sync", worker_id, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = as_json(result)
    assert doc["status"] == "synced"
    assert doc["stats"]["cpu_percent"] == 1.5
    assert doc["last_sync"]

    # A new config makes it outdated until the next sync applies it.
    changed = dash.cli("workers", "set-config", worker_id, "-", "--json", input='{"a": 1}')
    assert as_json(changed)["status"] == "outdated"
    again = as_json(dash.cli("workers", "sync", worker_id, "--json"))
    assert again["status"] == "synced"
    assert again["applied_revision"] == again["desired_revision"]
    history = as_json(dash.cli("workers", "show", worker_id, "--json"))["history"]
    assert [h["status"] for h in history][-3:] == ["synced", "outdated", "synced"]


def test_sync_all_counts_outcomes(own_dash: Dashboard, fleet_worker: Any) -> None:
    fleet_worker(own_dash)
    fleet_worker(own_dash)
    all_good = own_dash.cli("workers", "sync-all", "--json")
    assert all_good.returncode == 0, all_good.stderr
    assert as_json(all_good)["synced"] == 2

    own_dash.new_worker(port=free_port())  # unreachable
    mixed = own_dash.cli("workers", "sync-all", "--json")
    assert mixed.returncode == 11
    counts = as_json(mixed)
    assert counts["synced"] == 2 and counts["failed"] == 1
    table = own_dash.cli("workers", "sync-all")
    assert table.returncode == 11 and "failed" in table.stdout


def test_delete_needs_confirmation_without_a_tty(dash: Dashboard) -> None:
    worker_id = dash.new_worker()
    refused = dash.cli("workers", "delete", worker_id)
    assert refused.returncode == 2
    assert "--yes" in one_line_error(refused)
    assert dash.cli("workers", "show", worker_id, "--json").returncode == 0

    deleted = dash.cli("workers", "delete", worker_id, "--yes", "--json")
    assert deleted.returncode == 0, deleted.stderr
    as_json(deleted)
    gone = dash.cli("workers", "show", worker_id)
    assert gone.returncode != 0
    assert worker_id in one_line_error(gone) or "not found" in gone.stderr.lower()


def test_delete_asks_on_a_tty(dash: Dashboard) -> None:
    import pty

    worker_id = dash.new_worker()
    for answer, code, exists in ((b"n\n", 1, True), (b"y\n", 0, False)):
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vectis",
                "dashboard",
                "workers",
                "delete",
                worker_id,
                "--url",
                dash.url,
            ],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env({"VECTIS_ADMIN_TOKEN": ADMIN}),
        )
        os.close(secondary)
        os.write(primary, answer)
        _, err = proc.communicate(timeout=30)
        os.close(primary)
        assert proc.returncode == code, err
        assert b"Delete worker" in err
        shown = dash.cli("workers", "show", worker_id, "--json")
        assert (shown.returncode == 0) is exists


def test_unknown_worker_or_token_is_named(dash: Dashboard) -> None:
    for command in (("show",), ("sync",), ("delete", "--yes"), ("set-config", "-")):
        result = dash.cli("workers", command[0], "no-such-worker-0000", *command[1:], input="{}")
        assert result.returncode not in (0, 2, 4, 5)
        assert one_line_error(result) == "vectis: no worker 'no-such-worker-0000'", command
    revoked = dash.cli("tokens", "revoke", "no-such-token")
    assert revoked.returncode not in (0, 2, 4, 5)
    assert one_line_error(revoked) == "vectis: no token 'no-such-token'"


def test_wrong_admin_token_exits_4(dash: Dashboard, tmp_path: Path) -> None:
    result = dash.cli("workers", "list", "--json", token="not-the-token")
    assert result.returncode == 4
    assert "refused the admin token" in one_line_error(result)
    assert "not-the-token" not in result.stderr

    missing = dash.cli("workers", "list", token=None)
    assert missing.returncode == 3
    assert "VECTIS_ADMIN_TOKEN" in one_line_error(missing)

    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN + "\n")
    from_file = dash.cli(
        "workers", "list", "--json", "--admin-token-file", str(token_file), token=None
    )
    assert from_file.returncode == 0, from_file.stderr
    assert "workers" in as_json(from_file)


def test_dashboard_down_exits_5(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(
        ["dashboard", "workers", "list", "--url", url], env={"VECTIS_ADMIN_TOKEN": ADMIN}
    )
    assert result.returncode == 5
    assert url in one_line_error(result)
    by_env = run_cli(
        ["dashboard", "tokens", "list"],
        env={"VECTIS_ADMIN_TOKEN": ADMIN, "VECTIS_DASHBOARD_URL": url},
    )
    assert by_env.returncode == 5 and url in one_line_error(by_env)


def test_tokens_create_list_revoke(dash: Dashboard) -> None:
    created = dash.cli("tokens", "create", "--description", "rack 7", "--max-uses", "5", "--json")
    assert created.returncode == 0, created.stderr
    token = as_json(created)
    assert token["token"] and token["id"]

    listed = dash.cli("tokens", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    by_id = {t["id"]: t for t in as_json(listed)["tokens"]}
    assert by_id[token["id"]]["description"] == "rack 7"
    assert token["token"] not in listed.stdout  # shown once, at creation only
    table = dash.cli("tokens", "list")
    assert table.returncode == 0 and "rack 7" in table.stdout
    assert token["token"] not in table.stdout

    status, _ = dash.register(token=token["token"])
    assert status == 201

    revoked = dash.cli("tokens", "revoke", token["id"], "--json")
    assert revoked.returncode == 0, revoked.stderr
    as_json(revoked)
    status, body = dash.register(token=token["token"])
    assert status == 401 and body == {"error": "unauthorized"}


def test_tokens_create_prints_the_install_line(dash: Dashboard) -> None:
    result = dash.cli("tokens", "create", "--expires-in", "3600")
    assert result.returncode == 0, result.stderr
    token = next(
        line.split()[-1] for line in result.stdout.splitlines() if line.startswith("token:")
    )
    assert re.search(
        r"^expires: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 59 min\)$", result.stdout, re.M
    )
    # The token is exported, then handed through sudo's environment: never in its argv.
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert f"export VECTIS_TOKEN={token} VECTIS_DASHBOARD_URL={dash.url}" in lines
    curl = (
        f"curl -fsSL {dash.url}/install.sh"
        " | sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash"
    )
    assert curl in lines
    assert sum(token in line for line in lines) == 1
    # The two lines, run by a shell, hand the token and URL to what sudo runs.
    script = "\n".join(lines[lines.index(curl) - 1 : lines.index(curl)])
    shown = subprocess.run(
        ["bash", "-c", script + '\nprintf "%s %s" "$VECTIS_TOKEN" "$VECTIS_DASHBOARD_URL"'],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert shown.stdout == f"{token} {dash.url}"
    assert dash.register(token=token)[0] == 201


def test_commands_do_not_import_aiohttp(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from vectis.cli.main import main\n"
        "try:\n"
        "    main(['dashboard', 'workers', 'list', '--url', sys.argv[1]])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 5, exc.code\n"
        "heavy = {'aiohttp', 'boto3', 'dns', 'OpenSSL'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, f"http://127.0.0.1:{free_port()}"],
        env=child_env({"VECTIS_ADMIN_TOKEN": ADMIN}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_bad_url_and_a_silent_dashboard() -> None:
    env = {"VECTIS_ADMIN_TOKEN": ADMIN}
    bad = run_cli(["dashboard", "workers", "list", "--url", "ftp://example"], env=env)
    assert bad.returncode == 2 and "http(s)://" in one_line_error(bad)

    # A listener that accepts connections (in its backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run_cli(
            ["dashboard", "workers", "list", "--url", url, "--timeout", "0.5"], env=env
        )
    assert result.returncode == 5
    line = one_line_error(result)
    assert url in line and "0.5 s" in line


@pytest.fixture
def real_worker(tmp_path: Path) -> Iterator[Any]:
    """Start a real `vectis worker serve` registered with a dashboard: (dashboard) -> id."""
    stack: list[Any] = []

    def start(d: Dashboard) -> str:
        conf_dir = tmp_path / "worker"
        create_secret_file(conf_dir / "worker.secret")
        secret = (conf_dir / "worker.secret").read_text().strip()
        port = free_port()
        worker_id = d.new_worker(secret=secret, port=port)
        with locked_conf(conf_dir / "worker.conf") as conf:
            conf.settings.host = "127.0.0.1"
            conf.settings.port = port
            conf.state.id = worker_id
            conf.state.ip = "127.0.0.1"
            conf.state.reported_port = port
        proc = running(
            ["worker", "serve"],
            ready_url=f"http://127.0.0.1:{port}/healthz",
            log=tmp_path / "worker.log",
            env={"VECTIS_CONFIG_DIR": str(conf_dir)},
        )
        proc.__enter__()
        stack.append(proc)
        return worker_id

    yield start
    for proc in stack:
        proc.__exit__(None, None, None)


def test_show_prints_stats_for_people(dash: Dashboard, real_worker: Any) -> None:
    worker_id = real_worker(dash)
    synced = dash.cli("workers", "sync", worker_id, "--json")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    disks = as_json(synced)["stats"]["disks"]
    assert isinstance(disks, list) and disks[0]["mount"] == "/"  # --json: the API's own

    shown = dash.cli("workers", "show", worker_id)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert re.search(r"^disks: +/ \d+% of \d+(\.\d)? (B|KiB|MiB|GiB|TiB|PiB)$", out, re.M), out
    assert re.search(r"^memory: +\d+% of \d+\.\d [KMGTP]iB$", out, re.M), out
    assert re.search(r"^last sync: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(", out, re.M), out
    for repr_mark in ("{'", "[{", "['", "True", "False", "None"):
        assert repr_mark not in out, (repr_mark, out)


def test_nested_values_and_booleans_read_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert (hz.human(True), hz.human(False), hz.human(None)) == ("yes", "no", "-")
    assert hz.human({"on": True, "tags": ["a", "b"]}) == "on yes, tags a, b"
    stats = {
        "disks": [
            {"mount": "/", "total": 50 * 1024**3, "percent": 22.4},
            {"mount": "/srv", "error": "Permission denied"},
        ],
        "swap": {"total": 0, "used": 0, "percent": 0.0},
        "healthy": False,
        "extra": [{"x": True}, {"y": 1.5}],
    }
    hz.fields(hz.stats(stats))
    assert capsys.readouterr().out.splitlines() == [
        "disks:   / 22% of 50.0 GiB",
        "         /srv error: Permission denied",
        "swap:    0% of 0 B",
        "healthy: no",
        "extra:   x yes",
        "         y 1.5",
    ]


def _cells_whole(out: str, *values: str) -> None:
    for value in values:
        assert value in out, (value, out)
    for line in out.splitlines():
        assert len(line.rstrip()) <= 80, line
        assert "…" not in line, line


def test_tables_keep_ids_addresses_and_times_whole_in_80_columns(
    own_dash: Dashboard, fleet_worker: Any
) -> None:
    synced = fleet_worker(own_dash)
    assert own_dash.cli("workers", "sync", synced).returncode == 0
    port = 65000 + secrets.randbelow(500)
    failing = own_dash.new_worker(port=port)  # nothing listens there
    assert own_dash.cli("workers", "sync", failing).returncode == 11
    listed = own_dash.cli("workers", "list", columns=80)
    assert listed.returncode == 0, listed.stderr
    _cells_whole(listed.stdout, synced, failing, f"127.0.0.1:{port}")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(synced))
    assert re.search(r"  (now|\d+ s ago)  ", row), row

    created = own_dash.cli(
        "tokens",
        "create",
        "--description",
        "a rack in the far corner of hall 7, row 12",
        "--expires-in",
        "7200",
        "--json",
    )
    token_id = as_json(created)["id"]
    tokens = own_dash.cli("tokens", "list", columns=80)
    assert tokens.returncode == 0, tokens.stderr
    _cells_whole(tokens.stdout, token_id, "in 1 h", "far corner")
    row = next(line for line in tokens.stdout.splitlines() if line.startswith(token_id))
    assert re.search(r"  (now|\d+ s ago)  +in 1 h  ", row), row

    # Narrower than any table: one block per row, still nothing cut.
    narrow = own_dash.cli("workers", "list", columns=30)
    assert narrow.returncode == 0, narrow.stderr
    assert f"address:    127.0.0.1:{port}" in narrow.stdout
    assert f"id:         {failing}" in narrow.stdout
