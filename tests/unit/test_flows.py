"""The flows' pure parts: token precedence, the --json document, what counts as a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from vectis import __version__
from vectis.config import WorkerConf
from vectis.errors import ConfigError, ExitCode
from vectis.status import SyncRecord, SyncStatus
from vectis.worker.client import DashboardRefused
from vectis.worker.flows import FlowResult, NotRegistered, _changes, read_token


def test_token_precedence(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n  from-file  \n")
    env = {"VECTIS_TOKEN": "from-env"}
    assert read_token("from-flag", str(token_file), env) == "from-file"
    assert read_token("from-flag", None, env) == "from-flag"
    assert read_token(None, None, env) == "from-env"
    assert read_token(None, None, {"VECTIS_TOKEN": "  "}) is None  # empty means none
    assert read_token("", None, {}) is None
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert read_token(None, str(empty), env) is None
    with pytest.raises(ConfigError, match="cannot read the enrollment token"):
        read_token(None, str(tmp_path / "missing"), env)


def _conf(**state: object) -> WorkerConf:
    conf = WorkerConf()
    for key, value in state.items():
        setattr(conf.state, key, value)
    return conf


def test_json_document_fields_and_exit_codes() -> None:
    conf = _conf(
        id="brave-otter-3f2a",
        subdomain="brave-otter-3f2a.fleet.test",
        ip="203.0.113.5",
        reported_port=3100,
        reported_version=__version__,
        dashboard_version="9.9.9",
        sync=SyncRecord(SyncStatus.FAILED, "2026-11-27T12:00:00Z", "boom", 2),
    )
    error = DashboardRefused("boom")
    data = FlowResult("heartbeat", conf, error).as_json()
    assert data == {
        "action": "heartbeat",
        "id": "brave-otter-3f2a",
        "subdomain": "brave-otter-3f2a.fleet.test",
        "ip": "203.0.113.5",
        "port": 3100,
        "version": __version__,
        "dashboard_version": "9.9.9",
        "sync_status": "failed",
        "last_sync": "2026-11-27T12:00:00Z",
        "error": "boom",
        "consecutive_failures": 2,
        "applied_revision": 0,
        "config_applied": False,
        "dashboard_url": None,
        "message": "boom",
    }
    assert FlowResult("heartbeat", conf, error).exit_code == ExitCode.FAILED
    assert FlowResult("none", WorkerConf(), NotRegistered("x")).exit_code == ExitCode.PENDING
    synced = _conf(sync=SyncRecord(SyncStatus.SYNCED, last_error="old"))
    assert FlowResult("heartbeat", synced).as_json()["error"] is None
    assert FlowResult("heartbeat", synced).exit_code == ExitCode.OK


def test_changes_name_what_moved() -> None:
    conf = _conf(ip="203.0.113.5", reported_port=3000, reported_version=__version__)
    assert _changes(conf, "203.0.113.5", 3000) is None
    assert _changes(conf, "198.51.100.1", 3000) == "ip 203.0.113.5 -> 198.51.100.1"
    assert _changes(conf, "203.0.113.5", 3001) == "port 3000 -> 3001"
    conf.state.reported_version = "0.0.1"
    assert _changes(conf, "203.0.113.5", 3000) == f"version 0.0.1 -> {__version__}"


def test_rotations_need_a_registered_worker() -> None:
    """Without a registration (no worker.conf here) neither rotation starts, each saying why."""
    from vectis.worker.flows import FlowOptions, rotate_secret, rotate_tls_key

    options = FlowOptions(dashboard_url="http://127.0.0.1:9")
    with pytest.raises(NotRegistered, match="not registered, so there is no secret to rotate"):
        rotate_secret(options)
    with pytest.raises(NotRegistered, match="not registered, so no key is pinned to rotate"):
        rotate_tls_key(options)
