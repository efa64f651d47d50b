"""The worker process over its life: start refusals, registration without restart, restarts,
a full nonce store, systemd readiness, and a quick clean stop on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path

from tests.integration.test_worker_daemon import (
    WID,
    assert_serving,
    assert_unauthorized,
    auth,
    body_of,
    call,
    setup_worker,
    sync,
    worker_env,
)
from tests.support import free_port, run_cli, running
from vectis.configfile import locked_conf, read_conf
from vectis.crypto.signing import b64url


def test_secret_readable_by_others_refuses_to_start(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    (w.conf_dir / "worker.secret").chmod(0o644)
    done = run_cli(["worker", "serve"], env=worker_env(w), timeout=30)
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "0644" in lines[0] and "chmod 600" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_missing_secret_and_bad_conf_refuse_to_start(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    (w.conf_dir / "worker.secret").unlink()
    done = run_cli(["worker", "serve"], env=worker_env(w), timeout=30)
    assert done.returncode == 3 and "vectis worker init" in done.stderr
    w = setup_worker(tmp_path / "etc2")
    w.conf_file.write_text('port = "http"\n')
    done = run_cli(["worker", "serve"], env=worker_env(w), timeout=30)
    assert done.returncode == 3
    assert "worker.conf: key 'port'" in done.stderr and "Traceback" not in done.stderr


def test_registration_is_picked_up_without_restart(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc", registered=False)
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                 env=worker_env(w)):  # fmt: skip
        status, _, answer = sync(w)
        assert_unauthorized(status, answer)
        # What `vectis register` does: a locked write of the new state.
        with locked_conf(w.conf_file) as conf:
            conf.state.id, conf.state.ip = WID, "127.0.0.1"
        status, _, answer = sync(w, body_of(2, {"a": 1}))
        assert status == 200 and json.loads(answer)["applied_revision"] == 2
        # The daemon's own write kept what the command wrote.
        conf = read_conf(w.conf_file)
        assert (conf.state.id, conf.state.ip, conf.config) == (WID, "127.0.0.1", {"a": 1})


def test_replay_right_after_a_restart_is_refused(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    body = body_of()
    env = worker_env(w)
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "a.log", env=env):
        header, _ = auth(w.key, body)
        signed_at = int(header.split(".")[2])
        assert call(w.port, "POST", "/sync", body, {"Authorization": header})[0] == 200
    # The new process has forgotten the nonce; its start time is what refuses the replay.
    while int(time.time()) <= signed_at:
        time.sleep(0.02)
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "b.log", env=env):
        status, _, answer = call(w.port, "POST", "/sync", body, {"Authorization": header})
        assert_unauthorized(status, answer)
        assert_serving(w)


def test_forged_flood_does_not_fill_the_nonce_store(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    env = worker_env(w, VECTIS_NONCE_CAPACITY="3")
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log", env=env):
        conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
        body = body_of()
        for _ in range(1000):
            # Well-formed, fresh nonce and ts, random signature: refused at the signature.
            forged = f"{auth(w.key, body)[0].rsplit('.', 1)[0]}.{b64url(os.urandom(32))}"
            conn.request("POST", "/sync", body=body, headers={"Authorization": forged})
            resp = conn.getresponse()
            assert resp.status == 401 and resp.read() == b'{"error":"unauthorized"}'
        conn.close()
        for _ in range(3):
            assert sync(w)[0] == 200
        status, _, answer = sync(w)
        assert status == 503
        doc = json.loads(answer)
        assert doc["error"] == "unavailable" and doc["message"]
        status, _, _ = call(w.port, "GET", "/healthz")
        assert status == 200


def test_sigterm_stops_quickly_with_exit_0_and_notifies_systemd(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_sock:
        notify_sock.bind(str(tmp_path / "notify"))
        notify_sock.settimeout(10)
        env = worker_env(w, NOTIFY_SOCKET=str(tmp_path / "notify"))
        with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                     env=env) as proc:  # fmt: skip
            assert notify_sock.recv(64) == b"READY=1"
            assert sync(w)[0] == 200
            assert sync(w)[0] == 200  # no status change: its last_sync is kept in memory
            in_memory = int(time.time())
            started = time.monotonic()
            assert proc.stop(signal.SIGTERM) == 0
            assert time.monotonic() - started < 3
            assert notify_sock.recv(64) == b"STOPPING=1"
    # The lazily kept last_sync was written at shutdown.
    last = read_conf(w.conf_file).state.sync.last_sync
    assert last is not None and last >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(in_memory))
    assert "stopped" in proc.output and "Traceback" not in proc.output


def test_sigint_also_exits_0(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                 env=worker_env(w)) as proc:  # fmt: skip
        assert proc.stop(signal.SIGINT) == 0


def test_settings_precedence_flag_over_env_over_conf(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    env_port = free_port()
    env = worker_env(w, VECTIS_WORKER_PORT=str(env_port))
    # VECTIS_WORKER_PORT wins over worker.conf's port...
    with running(["worker", "serve"], ready_url=f"http://127.0.0.1:{env_port}/healthz",
                 log=tmp_path / "a.log", env=env) as proc:  # fmt: skip
        assert f"127.0.0.1:{env_port}" in proc.output
    # ...and --port wins over VECTIS_WORKER_PORT.
    with running(["worker", "serve", "--port", str(w.port)], ready_url=w.healthz,
                 log=tmp_path / "b.log", env=env) as proc:  # fmt: skip
        assert f"127.0.0.1:{w.port}" in proc.output


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", w.port))
        busy.listen()
        done = run_cli(["worker", "serve"], env=worker_env(w), timeout=30)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{w.port}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_worker_init_is_idempotent_and_keeps_state(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    env = {"VECTIS_CONFIG_DIR": str(conf_dir)}
    args = ["worker", "init", "--dashboard-url", "http://127.0.0.1:8080/", "--port", "3999"]
    first = run_cli([*args, "--json"], env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["secret_created"] is True and doc["changed"] == {
        "dashboard_url": "http://127.0.0.1:8080",
        "port": 3999,
    }
    secret = (conf_dir / "worker.secret").read_text()
    assert (conf_dir / "worker.secret").stat().st_mode & 0o777 == 0o600
    with locked_conf(conf_dir / "worker.conf") as conf:
        conf.state.id = WID
        conf.raw["custom"] = {"keep": "me"}
    again = run_cli([*args, "--json"], env=env)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["secret_created"] is False and doc["changed"] == {} and doc["registered"] is True
    assert (conf_dir / "worker.secret").read_text() == secret
    conf = read_conf(conf_dir / "worker.conf")
    assert conf.state.id == WID and conf.raw["custom"] == {"keep": "me"}
    human = run_cli(["worker", "init", "--port", "4000"], env=env)
    assert human.returncode == 0 and human.stdout == ""
    assert "kept the existing worker secret" in human.stderr and "set port = 4000" in human.stderr
    bad = run_cli(["worker", "init", "--dashboard-url", "ftp://x"], env=env)
    assert bad.returncode == 2 and "http:// or https://" in bad.stderr
    assert os.stat(conf_dir / "worker.conf").st_mode & 0o777 == 0o600


def test_heartbeat_runs_beside_sync_and_stops_with_the_daemon(tmp_path: Path) -> None:
    # A dashboard URL where nothing listens: the beats fail, /sync must not care.
    w = setup_worker(tmp_path / "etc", dashboard_url=f"http://127.0.0.1:{free_port()}")
    # The IP is given, so no beat looks outside the host for it.
    env = worker_env(w, VECTIS_HEARTBEAT_INTERVAL="1", VECTIS_PUBLIC_IP="127.0.0.1")
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                 env=env) as proc:  # fmt: skip
        deadline = time.monotonic() + 15
        while "heartbeat failed" not in proc.output and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "heartbeat failed" in proc.output, proc.output
        assert_serving(w)
        started = time.monotonic()
        assert proc.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 5
    assert "Traceback" not in proc.output
