"""worker.conf: schema errors name file and key, writes are atomic and keep unknown keys."""

from __future__ import annotations

import os
import stat
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vectis import status as st
from vectis.config import HISTORY_LIMIT, parse_worker_conf
from vectis.configfile import conf_path, locked_conf, read_conf, secret_path
from vectis.contract import MAX_REVISION
from vectis.crypto.secrets import create_secret_file, read_secret_file
from vectis.errors import ConfigError

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_defaults_when_missing() -> None:
    conf = read_conf()
    assert not conf.registered
    assert conf.settings.port == 3000
    assert conf.settings.host == "0.0.0.0"
    assert conf.state.sync.status is st.SyncStatus.PENDING


def test_round_trip_keeps_unknown_keys_and_mode() -> None:
    path = conf_path()
    path.parent.mkdir(parents=True)
    path.write_text('port = 3100\noperator_note = "rack 4"\n[state]\nextra = 1\n[custom]\na = 2\n')
    with locked_conf() as conf:
        conf.state.id = "brave-otter-3f2a"
        conf.state.ip = "203.0.113.5"
        conf.state.sync, change = st.succeeded(conf.state.sync, T0, cause="registered")
        conf.record(change)
    doc = tomllib.loads(path.read_text())
    assert doc["operator_note"] == "rack 4"
    assert doc["custom"] == {"a": 2}
    assert doc["state"]["extra"] == 1
    assert doc["state"]["id"] == "brave-otter-3f2a"
    assert doc["state"]["sync_status"] == "synced"
    assert doc["port"] == 3100
    assert "last_error" not in doc["state"]
    assert doc["history"][0]["cause"] == "registered"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_block_writes_nothing() -> None:
    with locked_conf() as conf:
        conf.state.id = "first-0000"
    before = conf_path().read_bytes()
    with pytest.raises(RuntimeError), locked_conf() as conf:
        conf.state.id = "second-0000"
        raise RuntimeError("boom")
    assert conf_path().read_bytes() == before


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("port = 70000", "port"),
        ("port = 'x'", "port"),
        ("dashboard_url = 'ftp://x'", "dashboard_url"),
        ("[state]\nsync_status = 'great'", "state.sync_status"),
        ("[state]\nip = '999.1.1.1'", "state.ip"),
        ("state = 3", "state"),
        ("heartbeat_interval = 0", "heartbeat_interval"),
        (f"[state]\napplied_revision = {MAX_REVISION + 1}", "state.applied_revision"),
    ],
)
def test_bad_values_name_file_and_key(text: str, key: str) -> None:
    path = conf_path()
    path.parent.mkdir(parents=True)
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        read_conf()
    assert str(path) in info.value.message
    assert f"'{key}'" in info.value.message
    assert "\n" not in info.value.message


def test_bad_toml_names_file() -> None:
    path = conf_path()
    path.parent.mkdir(parents=True)
    path.write_text("port = = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_conf()


def test_history_is_bounded() -> None:
    conf = parse_worker_conf({}, "x")
    record = conf.state.sync
    for i in range(HISTORY_LIMIT + 20):
        if i % 2:
            record, change = st.failed(record, T0, "e")
        else:
            record, change = st.succeeded(record, T0)
        conf.record(change)
    assert len(conf.history) == HISTORY_LIMIT


def test_secret_created_once_0600_and_checked() -> None:
    path = secret_path()
    assert create_secret_file(path)
    first = read_secret_file(path)
    assert len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not create_secret_file(path)
    assert read_secret_file(path) == first
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="group or others"):
        read_secret_file(path)


@pytest.mark.parametrize("content", ["", "abc", "Z" * 64, "A" * 64])
def test_bad_secret_refused(content: str) -> None:
    path: Path = secret_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        read_secret_file(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_write_by_root_keeps_the_files_owner() -> None:
    with locked_conf() as conf:
        conf.state.id = "first-0000"
    os.chown(conf_path(), 65534, 65534)  # as if the service user owned it
    with locked_conf() as conf:
        conf.state.id = "second-0000"
    st = conf_path().stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert read_conf().state.id == "second-0000"
