"""worker.conf survives SIGKILL of its writer at any moment, and concurrent writers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomli_w

from tests.faults.conf_writer import known_state
from tests.support import child_env
from vectis.configfile import CONF_NAME, conf_path, read_conf

WRITER = [sys.executable, str(Path(__file__).with_name("conf_writer.py"))]
KILLS = 50


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _check_whole(path: Path) -> str:
    """The file parses as TOML and worker.conf, and holds exactly state A or state B."""
    doc = tomllib.loads(path.read_text())
    conf = read_conf(path)
    assert doc["operator_note"] == "kept", "an unknown key was lost"
    name = conf.config.get("marker")
    assert name in ("A", "B"), f"neither state: marker={name!r}"
    config, revision = known_state(name)
    assert conf.config == config, f"state {name} is not whole"
    assert conf.state.applied_revision == revision
    return str(name)


def _wait_dead(pid: int, timeout: float = 10) -> None:
    """Wait until `pid` is a zombie (killed, not yet reaped by its parent) or gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return
        time.sleep(0.001)
    raise AssertionError(f"writer {pid} still running after SIGKILL")


@dataclass
class KillRun:
    states_seen: set[str] = field(default_factory=set)
    reads: int = 0
    kills_mid_write: int = 0
    temp_files_after: list[list[str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def kill_run(tmp_path_factory: pytest.TempPathFactory) -> KillRun:
    """KILLS writers, each killed with SIGKILL at a random moment; every state checked."""
    folder = tmp_path_factory.mktemp("etc-vectis")
    path = folder / CONF_NAME
    path.write_text(tomli_w.dumps({"operator_note": "kept", "config": known_state("B")[0]}))
    env = child_env({"VECTIS_CONFIG_DIR": str(folder)})
    rng = random.Random(8)
    run = KillRun()
    # A parent that forks each writer: the writers are real processes, killed one by one.
    forker = subprocess.Popen(
        [*WRITER, "fork"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert forker.stdin is not None and forker.stdout is not None
    try:
        for _ in range(KILLS):
            forker.stdin.write(b"next\n")
            forker.stdin.flush()
            word, pid = forker.stdout.readline().split()
            assert word == b"ready"
            # Read while it writes until a random moment, then kill it without warning.
            deadline = time.monotonic() + rng.uniform(0.001, 0.05)
            while True:
                _check_whole(path)
                run.reads += 1
                if time.monotonic() >= deadline:
                    break
            os.kill(int(pid), signal.SIGKILL)
            _wait_dead(int(pid))
            run.states_seen.add(_check_whole(path))
            leftovers = _temp_files(folder)
            run.kills_mid_write += bool(leftovers)
            run.temp_files_after.append(leftovers)
    finally:
        forker.stdin.close()
        assert forker.wait(10) == 0
        forker.stdout.close()
    return run


def test_sigkill_of_a_writer_leaves_the_old_or_the_new_state(kill_run: KillRun) -> None:
    # Every check of the file, during the writes and after each kill, passed in the fixture.
    assert kill_run.states_seen == {"A", "B"}, "the kills never landed on both states"
    assert kill_run.reads >= KILLS, "the file was not read while being written"
    # Some kills must have hit the window between temp file and rename, or nothing was tested.
    assert kill_run.kills_mid_write > 0


def test_killed_writers_do_not_pile_up_temp_files(kill_run: KillRun) -> None:
    worst = max(kill_run.temp_files_after, key=len)
    assert len(worst) <= 1, f"temp files pile up after {KILLS} kills: {len(worst)}"


def test_two_concurrent_writers_never_lose_each_others_changes() -> None:
    path = conf_path()
    path.parent.mkdir(parents=True)
    path.write_text('operator_note = "kept"\n')
    times = 300
    procs = [
        subprocess.Popen(
            [*WRITER, "count", table, str(times)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        for table in ("config", "state")
    ]
    try:
        # Both writers are up (imports done) before either starts: their loops overlap, and
        # without the lock a read-modify-write of one lands between the other's read and write.
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            proc.wait(60)
        outs = [proc.stdout.read() for proc in procs if proc.stdout is not None]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
    assert [proc.returncode for proc in procs] == [0, 0]
    assert outs == [b"done\n", b"done\n"]
    conf = read_conf(path)
    # Each writer's own counter, and the counter both of them add to: no update lost.
    assert conf.config["count"] == times
    assert conf.state.applied_revision == times
    assert conf.config["total"] == 2 * times
    assert tomllib.loads(path.read_text())["operator_note"] == "kept"
    assert _temp_files(path.parent) == []
    assert os.stat(path).st_mode & 0o777 == 0o600
