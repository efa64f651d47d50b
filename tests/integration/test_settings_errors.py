"""A bad setting is a configuration error: exit 3 and one line naming it, from every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_worker_daemon import setup_worker, worker_env
from tests.support import run_cli
from vectis.config import WorkerConf
from vectis.dashboard.settings import load_settings
from vectis.envsettings import NONCE_CAPACITY_RANGE
from vectis.errors import ConfigError
from vectis.worker.host import resolve_settings

# Each command reaches the port only after what comes before it in its flow is in place:
# a registered worker with a dashboard URL, and a token for `register`.
PORT_COMMANDS = [
    ["worker", "serve"],
    ["worker", "init"],
    ["status", "--json"],
    ["sync"],
    ["register", "--token", "an-enrollment-token"],
]


@pytest.mark.parametrize("bad", ["http", "0", "70000", "-1", " 1e3"])
def test_a_bad_worker_port_is_exit_3_with_one_message_from_every_command(
    tmp_path: Path, bad: str
) -> None:
    w = setup_worker(tmp_path / "etc", dashboard_url="http://127.0.0.1:9")
    env = worker_env(w, VECTIS_WORKER_PORT=bad, VECTIS_PUBLIC_IP="127.0.0.1")
    messages = set()
    for args in PORT_COMMANDS:
        done = run_cli(args, env=env, timeout=30)
        assert done.returncode == 3, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("vectis: VECTIS_WORKER_PORT: must be an integer from 1 to")
        messages.add(lines[0])
    assert len(messages) == 1, messages


def test_a_bad_port_flag_is_exit_3_too(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc", dashboard_url="http://127.0.0.1:9")
    lines = set()
    for args in (["worker", "serve"], ["worker", "init"], ["sync"]):
        done = run_cli([*args, "--port", "70000"], env=worker_env(w), timeout=30)
        assert done.returncode == 3, (args, done.stderr)
        lines.add(done.stderr.strip())
    assert lines == {"vectis: --port: must be an integer from 1 to 65535, not 70000"}


def test_one_nonce_capacity_range_on_both_sides(tmp_path: Path) -> None:
    low, high = NONCE_CAPACITY_RANGE
    ok = {"VECTIS_NONCE_CAPACITY": str(high)}
    assert resolve_settings(WorkerConf(), ok).nonce_capacity == high
    assert load_settings(ok).nonce_capacity == high
    for bad in (str(high + 1), str(2**31), str(low - 1)):
        over = {"VECTIS_NONCE_CAPACITY": bad}
        with pytest.raises(ConfigError) as worker_side:
            resolve_settings(WorkerConf(), over)
        with pytest.raises(ConfigError) as dashboard_side:
            load_settings(over)
        assert worker_side.value.message == dashboard_side.value.message
    # The same through the real processes: the daemon and the dashboard refuse it alike.
    w = setup_worker(tmp_path / "etc")
    env = worker_env(w, VECTIS_NONCE_CAPACITY=str(2**31))
    worker = run_cli(["worker", "serve"], env=env, timeout=30)
    dashboard = run_cli(["dashboard", "serve", "--port", "0"], env=env, timeout=30)
    assert worker.returncode == dashboard.returncode == 3
    assert (
        worker.stderr
        == dashboard.stderr
        == (
            f"vectis: VECTIS_NONCE_CAPACITY: must be an integer from {low} to {high}, "
            f"not '{2**31}'\n"
        )
    )
