"""Worker settings precedence, local facts that make it outdated, and systemd notify."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vectis import __version__
from vectis.config import WorkerConf, parse_worker_conf
from vectis.errors import BadRequest, ConfigError
from vectis.worker.host import facts_changed, resolve_settings
from vectis.worker.notify import notify


def conf(**top: object) -> WorkerConf:
    return parse_worker_conf(dict(top), "worker.conf")


def test_defaults() -> None:
    s = resolve_settings(conf(), {})
    assert (s.host, s.port, s.ip, s.nonce_capacity, s.heartbeat_interval) == (
        "0.0.0.0",
        3000,
        None,
        None,
        60.0,
    )
    assert s.stats_mounts == ("/",) and s.max_body == 1024 * 1024


def test_flag_over_env_over_conf() -> None:
    c = conf(host="10.0.0.1", port=4000, heartbeat_interval=30, dashboard_url="http://a.test")
    assert resolve_settings(c, {}).port == 4000
    env = {
        "VECTIS_WORKER_PORT": "5000",
        "VECTIS_WORKER_HOST": "127.0.0.2",
        "VECTIS_PUBLIC_IP": "203.0.113.9",
        "VECTIS_HEARTBEAT_INTERVAL": "5",
        "VECTIS_NONCE_CAPACITY": "3",
        "VECTIS_DASHBOARD_URL": "https://b.test/",
    }
    s = resolve_settings(c, env)
    assert (s.host, s.port, s.ip, s.heartbeat_interval, s.nonce_capacity) == (
        "127.0.0.2",
        5000,
        "203.0.113.9",
        5.0,
        3,
    )
    assert s.dashboard_url == "https://b.test"
    s = resolve_settings(c, env, host="127.0.0.3", port=6000, ip="2001:db8::1")
    assert (s.host, s.port, s.ip) == ("127.0.0.3", 6000, "2001:db8::1")


def test_empty_variables_mean_unset() -> None:
    s = resolve_settings(conf(port=4000), {"VECTIS_WORKER_PORT": "", "VECTIS_PUBLIC_IP": " "})
    assert (s.port, s.ip) == (4000, None)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"VECTIS_WORKER_PORT": "70000"}, ConfigError),
        ({"VECTIS_WORKER_PORT": "-1"}, ConfigError),
        ({"VECTIS_NONCE_CAPACITY": "0"}, ConfigError),
        ({"VECTIS_HEARTBEAT_INTERVAL": "nan"}, ConfigError),
        ({"VECTIS_HEARTBEAT_INTERVAL": "0.5"}, ConfigError),
        ({"VECTIS_DASHBOARD_URL": "dash.test"}, ConfigError),
        ({"VECTIS_PUBLIC_IP": "not-an-ip"}, BadRequest),
    ],
)
def test_bad_variables_name_themselves(env: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(env))):
        resolve_settings(conf(), env)


def test_facts_changed() -> None:
    state = {"id": "brave-otter-3f2a", "ip": "203.0.113.5", "reported_port": 3000}
    c = conf(state=state)
    assert facts_changed(c, 3000, None) is None
    assert facts_changed(c, 3000, "203.0.113.5") is None
    assert facts_changed(c, 3001, None) == "port changed from 3000 to 3001"
    assert (
        facts_changed(c, 3000, "203.0.113.6") == "public IP changed from 203.0.113.5 to 203.0.113.6"
    )
    old = conf(state={**state, "reported_version": "0.0.1"})
    assert facts_changed(old, 3000, None) == f"version changed from 0.0.1 to {__version__}"
    assert facts_changed(conf(), 1, "203.0.113.6") is None  # not registered: nothing to report


def test_notify_sends_to_a_path_and_an_abstract_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        assert notify("READY=1", str(tmp_path / "notify"))
        assert sock.recv(64) == b"READY=1"
    name = f"vectis-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("STOPPING=1", "@" + name)
        assert sock.recv(64) == b"STOPPING=1"


def test_notify_without_systemd_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    assert notify("READY=1", str(tmp_path / "nobody-listens")) is False
