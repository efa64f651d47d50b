"""`vectis demo`: a dashboard and local workers on loopback, registered and synced.

Every part is the real thing run as a child process (`vectis dashboard serve`, `vectis worker
init`/`serve`, `vectis register`), in a temporary directory that is removed on exit. Ctrl-C
or SIGTERM stops the children and exits 0, leaving no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from vectis.cli.render import out
from vectis.errors import VectisError

ZONE = "demo.test"
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


def _any_key(url: str) -> ssl.SSLContext | None:
    """For the worker's https:// readiness URL: its self-signed key (the dashboard pins it)."""
    if not url.startswith("https://"):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Stop(Exception):
    """Ctrl-C or SIGTERM: stop the children and exit 0."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: a child whose demo was killed outright (SIGKILL) is stopped with it.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Demo:
    """The children, their directories and the tokens of one demo run."""

    def __init__(self, root: Path, dashboard_port: int, workers: int) -> None:
        self.root = root
        self.url = f"http://{HOST}:{dashboard_port}"
        self.dashboard_port = dashboard_port
        self.admin_token = secrets.token_urlsafe(24)
        self.enroll_token = secrets.token_urlsafe(24)
        self.workers = [(root / f"worker-{i + 1}", _free_port()) for i in range(workers)]
        self.children: list[_Child] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith("VECTIS_")}
        base["PYTHONUNBUFFERED"] = "1"
        self.base_env = base

    def env(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {**self.base_env, **extra}

    def worker_env(self, conf_dir: Path) -> dict[str, str]:
        return self.env({"VECTIS_CONFIG_DIR": str(conf_dir), "VECTIS_PUBLIC_IP": HOST})

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> _Child:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "vectis", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
                preexec_fn=_die_with_parent,  # safe: the demo starts children from one thread
            )
        child = _Child(name, popen, log)
        self.children.append(child)
        return child

    def run(self, args: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vectis", *args],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def wait_ready(self, child: _Child, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if child.popen.poll() is not None:
                raise VectisError(
                    f"demo: {child.name} exited with {child.popen.returncode}:\n{child.tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=1, context=_any_key(url)) as resp,  # noqa: S310
            ):
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise VectisError(f"demo: {child.name} not ready after {READY_TIMEOUT:g} s")

    def admin_sync(self, worker_id: str) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
            f"{self.url}/infra/workers/{worker_id}/sync",
            data=b"",
            method="POST",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
                answer: dict[str, Any] = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise VectisError(f"demo: the dashboard could not sync {worker_id}: {exc}") from None
        return answer.get("worker", answer) if isinstance(answer.get("worker"), dict) else answer

    def stop_all(self) -> None:
        """SIGTERM every child (workers first), then SIGKILL what has not stopped in time."""
        for child in reversed(self.children):
            if child.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.popen.terminate()
        for child in reversed(self.children):
            try:
                child.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait(5)


def _print(text: str = "") -> None:
    out(text)  # cleaned there: it quotes the children's output


def _bring_up(demo: Demo) -> None:
    dash_env = demo.env(
        {
            "VECTIS_DATA_DIR": str(demo.root / "dashboard"),
            "VECTIS_DNS_BACKEND": "none",
            "VECTIS_ZONE": ZONE,
            "VECTIS_ADMIN_TOKEN": demo.admin_token,
            "VECTIS_TOKEN": demo.enroll_token,
            # The demo's workers live on loopback, which a dashboard refuses by default.
            "VECTIS_WORKER_NETWORKS": "127.0.0.0/8",
        }
    )
    dash_args = ["dashboard", "serve", "--host", HOST, "--port", str(demo.dashboard_port)]
    dashboard = demo.start("dashboard", dash_args, dash_env)
    daemons = []
    for conf_dir, port in demo.workers:
        env = demo.worker_env(conf_dir)
        init = demo.run(
            ["worker", "init", "--dashboard-url", demo.url, "--host", HOST, "--port", str(port)],
            env,
        )
        if init.returncode != 0:
            raise VectisError(f"demo: vectis worker init failed: {init.stderr.strip()}")
        daemons.append(demo.start(conf_dir.name, ["worker", "serve"], env))
    demo.wait_ready(dashboard, f"{demo.url}/healthz")
    for (_, port), daemon in zip(demo.workers, daemons, strict=True):
        # `worker init` made a TLS key: the daemon serves TLS (its key is pinned by the dashboard).
        demo.wait_ready(daemon, f"https://{HOST}:{port}/healthz")

    _print("Vectis demo: a dashboard and its workers on this machine.")
    _print()
    _print(f"  dashboard         {demo.url}/")
    _print(f"  admin token       {demo.admin_token}")
    _print(f"  enrollment token  {demo.enroll_token}")
    for conf_dir, port in demo.workers:
        env = {**demo.worker_env(conf_dir), "VECTIS_TOKEN": demo.enroll_token}
        done = demo.run(["register", "--json"], env)
        try:
            worker_id = json.loads(done.stdout)["id"]
        except (ValueError, KeyError, TypeError):
            worker_id = None
        if done.returncode != 0 or not worker_id:
            raise VectisError(f"demo: vectis register failed: {done.stderr.strip()}")
        synced = demo.admin_sync(worker_id)
        status = synced.get("status", "?")
        _print(f"  worker            {worker_id} at {HOST}:{port}, {status}")
    command = _command_name()
    for conf_dir, _ in demo.workers:
        shown = demo.run(["status"], demo.worker_env(conf_dir))
        _print()
        _print(f"$ VECTIS_CONFIG_DIR={conf_dir} {command} status")
        _print(shown.stdout.rstrip())
    _print()
    _print("Open the dashboard and log in with the admin token, or from another shell:")
    _print(f"  export VECTIS_DASHBOARD_URL={demo.url} VECTIS_ADMIN_TOKEN={demo.admin_token}")
    _print(f"  {command} dashboard workers list")
    _print()
    _print(f"Files and logs under {demo.root} (removed on exit). Press Ctrl-C to stop.")


def _command_name() -> str:
    """How this shell can run vectis again: the script itself when it is not on PATH."""
    script = Path(sys.argv[0])
    if script.name != "vectis":
        return f"{sys.executable} -m vectis"
    on_path = shutil.which("vectis")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "vectis"
    return str(script)


def _watch(demo: Demo, stop: threading.Event) -> None:
    """Wait for Ctrl-C/SIGTERM; a child that dies on its own ends the demo with an error."""
    while not stop.wait(0.5):
        for child in demo.children:
            if child.popen.poll() is not None:
                raise VectisError(
                    f"demo: {child.name} exited with {child.popen.returncode}:\n{child.tail()}"
                )


def run_demo(dashboard_port: int | None = None, workers: int = 1) -> int:
    """Run the demo until Ctrl-C or SIGTERM; return the exit code (0 on a clean stop)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise _Stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    root = Path(tempfile.mkdtemp(prefix="vectis-demo-"))
    demo = Demo(root, dashboard_port or _free_port(), workers)
    try:
        try:
            _bring_up(demo)
            _watch(demo, stop)
        except _Stop:
            pass
        # Later signals must not interrupt the clean-up.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        _print("Stopping the demo...")
        return 0
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        demo.stop_all()
        shutil.rmtree(root, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
