"""SIGKILL of the real writers of worker.conf: `vectis sync` and the worker daemon."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from tests.integration.test_dashboard_support import dashboard, worker_host
from tests.integration.test_worker_daemon import Worker, setup_worker, sync, worker_env
from tests.support import VECTIS, child_env, running
from vectis.configfile import locked_conf, read_conf

PAD = 64 * 1024  # a big [config], so that writing it takes a while


def config_for(revision: int) -> dict[str, Any]:
    """The config pushed as `revision`: applied_revision and [config] must always match."""
    return {"round": revision, "pad": "p" * PAD, "list": list(range(revision % 50))}


def check_conf(path: Path, worker_id: str) -> int:
    """worker.conf parses, keeps the operator's key and the id, and its config is whole."""
    doc = tomllib.loads(path.read_text())
    assert doc["operator_note"] == "kept"
    conf = read_conf(path)
    assert conf.state.id == worker_id
    revision = conf.state.applied_revision
    if revision:
        assert conf.config == config_for(int(conf.config["round"]))
    return revision


def test_sigkill_of_vectis_sync_leaves_a_whole_worker_conf(tmp_path: Path) -> None:
    host = worker_host(tmp_path / "etc")
    rng = random.Random(8)
    with dashboard(tmp_path) as dash:
        status, reg = dash.register(host.secret, host.port)
        assert status == 201, reg
        host.enroll(reg["id"], reg["subdomain"], dash.url)
        with locked_conf(host.conf_dir / "worker.conf") as conf:
            conf.raw["operator_note"] = "kept"
        env = child_env(host.env(VECTIS_PUBLIC_IP="127.0.0.1"))
        conf_file = host.conf_dir / "worker.conf"
        pushed = 0

        def push() -> int:
            status, doc = dash.call(
                "PUT", f"/infra/workers/{reg['id']}/config", config_for(pushed + 1)
            )
            assert status == 200, doc
            assert doc["desired_revision"] == pushed + 1
            return pushed + 1

        # One uninterrupted run: how long a sync takes here, and that it applies the config.
        pushed = push()
        started = time.monotonic()
        done = subprocess.run([*VECTIS, "sync"], env=env, capture_output=True, timeout=60)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert check_conf(conf_file, reg["id"]) == 1
        kills, mid_write, applied = 0, 0, 1
        for round_ in range(6):
            pushed = push()
            proc = subprocess.Popen(
                [*VECTIS, "sync"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if round_ % 2:  # at a random moment of the run
                try:
                    proc.wait(rng.uniform(0.3, 1.0) * took)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            else:  # the moment its temp file appears: between write and rename
                tmp = conf_file.with_name(f".worker.conf.{proc.pid}.tmp")
                while proc.poll() is None:
                    if tmp.exists():
                        proc.send_signal(signal.SIGKILL)
                        kills, mid_write = kills + 1, mid_write + 1
                        break
                    time.sleep(0.0002)  # poll, leaving the CPU to the sync being watched
            proc.wait(10)
            before, applied = applied, check_conf(conf_file, reg["id"])
            if proc.returncode == 0:
                assert applied == pushed
            else:  # killed: the old revision or the new one, never a step back
                assert proc.returncode == -signal.SIGKILL
                assert before <= applied <= pushed
        assert kills >= 2 and mid_write >= 1, (kills, mid_write)
        # The next uninterrupted sync catches up.
        done = subprocess.run([*VECTIS, "sync"], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert check_conf(conf_file, reg["id"]) == pushed


def _pusher(w: Worker, start: int, acked: list[int], stop: threading.Event) -> None:
    """Send signed /sync calls with ever newer revisions until the daemon dies."""
    revision = start
    while not stop.is_set():
        revision += 1
        body = json.dumps({"revision": revision, "config": config_for(revision)}).encode()
        try:
            status, _, answer = sync(w, body)
        except OSError:
            return
        if status != 200:
            return
        acked.append(json.loads(answer)["applied_revision"])


def test_sigkill_of_the_worker_daemon_keeps_every_acknowledged_revision(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    with locked_conf(w.conf_file) as conf:
        conf.raw["operator_note"] = "kept"
    rng = random.Random(8)
    revision = 0
    for round_ in range(4):
        acked: list[int] = []
        stop = threading.Event()
        with running(
            ["worker", "serve"],
            ready_url=w.healthz,
            log=tmp_path / f"worker-{round_}.log",
            env=worker_env(w),
        ) as proc:
            pusher = threading.Thread(target=_pusher, args=(w, revision, acked, stop))
            pusher.start()
            deadline = time.monotonic() + 10
            want = rng.randint(3, 12)
            while len(acked) < want and pusher.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            proc.stop(signal.SIGKILL)
            stop.set()
            pusher.join(15)
            assert len(acked) >= want, proc.output
        on_disk = check_conf(w.conf_file, "brave-otter-3f2a")
        # An acknowledged revision was persisted before the answer: none is lost.
        assert on_disk >= max(acked), (on_disk, acked)
        revision = on_disk + 1
