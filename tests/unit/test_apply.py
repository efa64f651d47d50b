"""Issue 17's pure parts and bounds: apply settings, labels, the cause of a failed apply, the
dashboard's reading of it; and `apply_config` against a real /bin/sh."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vectis.config import parse_worker_conf, render_worker_conf
from vectis.configfile import locked_conf, read_conf
from vectis.contract import APPLY_ERROR_MAX
from vectis.dashboard import validate
from vectis.dashboard.model import SyncReply, after_heartbeat, after_sync, apply_note, new_worker
from vectis.dashboard.syncer import read_reply
from vectis.errors import BadRequest, ConfigError
from vectis.status import SyncRecord, SyncStatus
from vectis.worker.apply import Applier, apply_config, bounded, stderr_tail
from vectis.worker.host import (
    ApplySettings,
    apply_settings,
    labels_given,
    resolve_settings,
    status_report,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def conf(**top: Any) -> Any:
    return parse_worker_conf(dict(top), "worker.conf")


# -- settings --------------------------------------------------------------------------------------


def test_apply_settings_default_off_then_env_over_conf() -> None:
    off = apply_settings(conf(), {})
    assert off == ApplySettings(None, None, 30.0) and not off.enabled
    c = conf(apply_file="/srv/app.json", apply_command="true", apply_timeout=5)
    assert apply_settings(c, {}) == ApplySettings("/srv/app.json", "true", 5.0)
    env = {
        "VECTIS_APPLY_FILE": "/etc/x.json",
        "VECTIS_APPLY_COMMAND": "nginx -t",
        "VECTIS_APPLY_TIMEOUT": "2.5",
    }
    assert apply_settings(c, env) == ApplySettings("/etc/x.json", "nginx -t", 2.5)
    assert resolve_settings(c, env).apply.enabled
    only_command = apply_settings(conf(), {"VECTIS_APPLY_COMMAND": "true"})
    assert only_command.enabled and only_command.file is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"VECTIS_APPLY_FILE": "relative/app.json"}, "VECTIS_APPLY_FILE: must be an absolute path"),
        ({"VECTIS_APPLY_FILE": "/etc/folder/"}, "VECTIS_APPLY_FILE: must name a file"),
        ({"VECTIS_APPLY_TIMEOUT": "0"}, "VECTIS_APPLY_TIMEOUT: must be a number from 0.1"),
        ({"VECTIS_APPLY_TIMEOUT": "nan"}, "VECTIS_APPLY_TIMEOUT"),
        ({"VECTIS_APPLY_TIMEOUT": "1e12"}, "VECTIS_APPLY_TIMEOUT"),
        ({"VECTIS_APPLY_COMMAND": "x" * 5000}, "VECTIS_APPLY_COMMAND: must be a shell command"),
    ],
)
def test_bad_apply_variables_name_themselves(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_settings(conf(), env)
    assert names in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(
    ("top", "says"),
    [
        ({"apply_file": "app.json"}, "key 'apply_file': must be an absolute path"),
        ({"apply_command": "  "}, "key 'apply_command': must be a shell command"),
        ({"apply_command": 3}, "key 'apply_command': must be a string"),
        ({"apply_timeout": -1}, "key 'apply_timeout': must be a number from 0.1 to 86400"),
        ({"apply_timeout": True}, "key 'apply_timeout'"),
        ({"labels": {"role": "a b"}}, "key 'labels': label 'role': the value"),
        ({"labels": {"-bad": "x"}}, "key 'labels': label key '-bad'"),
        ({"labels": "role=edge"}, "key 'labels': must be a table"),
    ],
)
def test_bad_worker_conf_keys_name_the_key(top: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        conf(**top)
    assert says in err.value.message, err.value.message


def test_apply_keys_and_state_survive_a_round_trip() -> None:
    c = conf(apply_file="/srv/a.json", apply_command="true", apply_timeout=2, labels={"a": "b"})
    c.state.pending_revision, c.state.apply_error = 4, "exit 1: bad"
    c.pending_config = {"k": [1, 2]}
    again = parse_worker_conf(render_worker_conf(c), "worker.conf")
    assert again.settings.apply_timeout == 2.0 and again.labels == {"a": "b"}
    assert again.state.pending_revision == 4 and again.state.apply_error == "exit 1: bad"
    assert again.pending_config == {"k": [1, 2]}
    again.state.pending_revision, again.pending_config = None, None
    doc = render_worker_conf(again)
    assert "pending_config" not in doc and "pending_revision" not in doc["state"]
    assert "apply_timeout" not in render_worker_conf(conf())  # the default is not written


def test_labels_from_flags_or_the_variable() -> None:
    assert labels_given({}, None) is None
    assert labels_given({"VECTIS_LABELS": " role=edge , region=eu-west,"}, None) == {
        "role": "edge",
        "region": "eu-west",
    }
    flags = ["role=edge", "example.com/tier=gold", "empty="]
    assert labels_given({"VECTIS_LABELS": "x=y"}, flags) == {
        "role": "edge",
        "example.com/tier": "gold",
        "empty": "",
    }
    for bad in (["role"], ["role=a b"], ["=x"], [f"k{i}=v" for i in range(65)]):
        with pytest.raises(ConfigError) as err:
            labels_given({}, bad)
        assert err.value.message.startswith("--label: ")
    with pytest.raises(ConfigError, match=r"^VECTIS_LABELS: "):
        labels_given({"VECTIS_LABELS": "a=b,c"}, None)


# -- the cause of a failure ------------------------------------------------------------------------


def test_the_cause_is_readable_bounded_and_keeps_the_end_of_stderr() -> None:
    tail = stderr_tail(b"first\n\n  second line  \r\nthird\x1b[31m red\n")
    assert tail == "first | second line | third\x1b[31m red"
    cause = bounded("exit 1", tail)
    assert cause == "exit 1: first | second line | third\\x1b[31m red"
    long = bounded("exit 2", "x" * 5000 + " the end")
    assert len(long) == APPLY_ERROR_MAX and long.startswith("exit 2: ...")
    assert long.endswith(" the end")
    assert bounded("timed out after 3s") == "timed out after 3s"
    assert bounded("exit 1", "\u202e\x00" * 400).isprintable()


def _settings(tmp_path: Path, command: str | None, timeout: float = 10) -> ApplySettings:
    return ApplySettings(str(tmp_path / "app.json"), command, timeout)


def test_apply_config_writes_the_file_and_runs_the_command(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    command = (
        f'{{ echo "$VECTIS_REVISION $VECTIS_WORKER_ID ${{VECTIS_TOKEN-unset}}"; cat; }} > {seen}'
    )
    settings = _settings(tmp_path, command)
    env = {"PATH": os.environ["PATH"], "VECTIS_TOKEN": "enroll-secret"}
    assert apply_config(settings, 7, {"a": "é"}, "brave-otter-3f2a", env=env) is None
    assert json.loads((tmp_path / "app.json").read_text()) == {"a": "é"}
    first, _, stdin = seen.read_text().partition("\n")
    assert first == "7 brave-otter-3f2a unset"  # the enrollment token is withheld
    assert json.loads(stdin) == {"a": "é"}


def test_a_failed_command_puts_the_previous_file_back(tmp_path: Path) -> None:
    target = tmp_path / "app.json"
    target.write_text('{"old": 1}\n')
    target.chmod(0o640)
    env = {"PATH": os.environ["PATH"]}
    cause = apply_config(_settings(tmp_path, "echo no >&2; exit 3"), 2, {"new": 2}, "w", env=env)
    assert cause == "exit 3: no"
    assert target.read_text() == '{"old": 1}\n' and target.stat().st_mode & 0o777 == 0o640
    target.unlink()
    cause = apply_config(_settings(tmp_path, "kill -9 $$"), 2, {"new": 2}, "w", env=env)
    assert cause == "killed by signal 9 (SIGKILL)"
    assert not target.exists()  # there was none before
    # Without a command, writing the file is the whole apply.
    assert apply_config(_settings(tmp_path, None), 3, {"n": 3}, "w", env=env) is None
    assert json.loads(target.read_text()) == {"n": 3}


def test_a_file_that_cannot_be_written_is_the_cause(tmp_path: Path) -> None:
    settings = ApplySettings(str(tmp_path / "missing" / "app.json"), "touch ran", 5)
    cause = apply_config(settings, 1, {}, "w", env={"PATH": os.environ["PATH"]})
    assert cause == f"cannot write {tmp_path}/missing/app.json: No such file or directory"
    assert not (Path.cwd() / "ran").exists()


def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    cause = apply_config(
        _settings(tmp_path, f"sleep 30 & echo $! > {pid_file}; echo slow >&2; wait", 0.5),
        1,
        {},
        "w",
        env={"PATH": os.environ["PATH"]},
    )
    assert cause == "timed out after 0.5s: slow"
    child = int(pid_file.read_text())
    try:
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z", "X")


async def test_a_sync_waiting_on_an_apply_wakes_after_its_outcome_is_read(tmp_path: Path) -> None:
    # The sync that carries a revision waits in `settle`, then answers from what the runtime
    # read in `done`: woken before `done` ends, it answered with the worker.conf of before.
    path = tmp_path / "worker.conf"
    with locked_conf(path) as c:
        c.state.id = "w1"
    seen: list[str | None] = []

    async def done() -> None:
        await asyncio.sleep(0.2)  # a slow read of worker.conf
        seen.append((await asyncio.to_thread(read_conf, path)).state.apply_error)

    applier = Applier(_settings(tmp_path, "echo broken >&2; exit 1"), path, done=done)
    applier.offer(1, {"role": "edge"}, "w1")
    await applier.settle(1, 10)
    assert seen == ["exit 1: broken"]
    assert applier.applying is None and not applier.wants(1)  # failed: retried after a pause
    await applier.close()


# -- the dashboard's side --------------------------------------------------------------------------


def test_apply_note() -> None:
    assert apply_note(3, 3, None, "exit 1: x") is None  # applied: no error whatever it says
    assert apply_note(2, 3, None, None) is None
    assert apply_note(2, 3, 3, None) is None  # applying, no failure yet
    assert apply_note(2, 3, None, "exit 1: x") == "apply failed: exit 1: x"
    assert apply_note(2, 3, 3, "exit 1: x") == "apply failed: exit 1: x; retrying"


def _worker(desired: int = 2, applied: int = 1, status: str = "synced") -> Any:
    from dataclasses import replace

    w = new_worker("brave-otter-3f2a", "fleet.test", "127.0.0.1", 3000, "ab" * 32, None, None, NOW)
    return replace(w, desired_revision=desired, applied_revision=applied, status=status)


def test_after_sync_and_heartbeat_with_an_apply_outcome() -> None:
    failed = SyncReply(1, None, None, None, applying_revision=None, apply_error="exit 1: bad")
    w, changes = after_sync(_worker(), NOW, failed)
    assert (w.status, w.last_error, w.consecutive_failures) == (
        "outdated",
        "apply failed: exit 1: bad",
        0,
    )
    assert [c.cause for c in changes] == ["apply failed: exit 1: bad"]
    w, _ = after_sync(w, NOW, SyncReply(1, None, None, None, applying_revision=2))
    assert (w.status, w.last_error) == ("outdated", None)
    w, changes = after_sync(w, NOW, SyncReply(2, None, None, None))
    assert (w.status, w.last_error) == ("synced", None)
    assert [c.cause for c in changes] == ["applied config revision 2"]
    w, _ = after_heartbeat(
        _worker(),
        NOW,
        ip="127.0.0.1",
        port=3000,
        version=None,
        applied_revision=1,
        apply_error="timed out after 30s",
    )
    assert (w.status, w.last_error) == ("outdated", "apply failed: timed out after 30s")


def _answer(**extra: Any) -> bytes:
    doc = {"status": "online", "worker_id": "brave-otter-3f2a", "applied_revision": 1, **extra}
    return json.dumps(doc).encode()


def test_read_reply_checks_the_apply_fields_as_untrusted() -> None:
    reply = read_reply("brave-otter-3f2a", _answer(applying_revision=2, apply_error="exit 1"), 1024)
    assert isinstance(reply, SyncReply)
    assert (reply.applying_revision, reply.apply_error) == (2, "exit 1")
    older = read_reply("brave-otter-3f2a", _answer(), 1024)  # a worker from before issue 17
    assert isinstance(older, SyncReply) and older.apply_error is None
    for bad in (
        {"apply_error": "a\x1b[2Jb"},
        {"apply_error": "x" * (APPLY_ERROR_MAX + 1)},
        {"apply_error": 3},
        {"applying_revision": "2"},
        {"applying_revision": -1},
        {"applying_revision": True},
    ):
        out = read_reply("brave-otter-3f2a", _answer(**bad), 1024)
        assert isinstance(out, str) and out.startswith("bad answer: "), (bad, out)


def test_heartbeat_apply_error_is_checked_at_the_edge() -> None:
    assert validate.heartbeat_apply_error({"apply_error": "exit 1: x"}) == "exit 1: x"
    assert validate.heartbeat_apply_error({}) is None
    assert validate.heartbeat_apply_error({"apply_error": None}) is None
    for bad in ("a\nb", "x" * (APPLY_ERROR_MAX + 1), 7):
        with pytest.raises(BadRequest) as err:
            validate.heartbeat_apply_error({"apply_error": bad})
        assert "apply_error" in err.value.message


def test_status_shows_an_apply_error_as_outdated() -> None:
    c = conf()
    c.state.id = "brave-otter-3f2a"
    c.state.sync = SyncRecord(SyncStatus.SYNCED)
    c.state.apply_error, c.state.pending_revision = "exit 1: bad", 2
    report = status_report(c, resolve_settings(c, {}), running=True)
    assert report["sync_status"] == "outdated"
    assert report["outdated_reason"] == "apply failed: exit 1: bad"
    assert report["apply_error"] == "exit 1: bad" and report["pending_revision"] == 2
