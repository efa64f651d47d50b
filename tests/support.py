"""Helpers for tests that run real `vectis` processes on loopback ports.

Every process is started with its own environment, waited on through its readiness URL
(never a fixed sleep), and stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from vectis.dashboard.core import Dashboard

VECTIS = [sys.executable, "-m", "vectis"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wildcard_port() -> int:
    """A port free on every address and below the kernel's ephemeral range, for a process
    that binds 0.0.0.0 later: no outgoing connection can take it in the meantime."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(10_000, low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def http(
    method: str,
    url: str,
    body: bytes | dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call with the standard library: (status, headers, raw body), never raising."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if isinstance(body, dict):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class Proc:
    """A running `vectis` process and its captured output."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the process and wait for it; SIGKILL if it does not stop in time."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return int(self.popen.returncode)


def wait_ready(url: str, proc: Proc | None = None, timeout: float = 20) -> None:
    """Poll `url` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise AssertionError(f"process exited with {proc.popen.returncode}:\n{proc.output}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=_any_key(url)) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout} s:\n{proc.output if proc else ''}")


def _any_key(url: str) -> ssl.SSLContext | None:
    """For an https:// readiness URL: a pinned worker's self-signed key (checked elsewhere)."""
    if not url.startswith("https://"):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def until(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll `check` until it returns something truthy (and return it); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Repeating:
    """`step()` again and again in a thread, `pause` seconds apart, while its `with` block runs
    (a sync loop, a watch on a key...)."""

    pause = 0.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def step(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.pause)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment (isolated VECTIS_* dirs included) plus `extra`."""
    env = dict(os.environ)
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@contextmanager
def running(
    args: Sequence[str],
    *,
    ready_url: str | None,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
) -> Iterator[Proc]:
    """Start `vectis ARGS`, wait until `ready_url` answers, stop it afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("wb")
    popen = subprocess.Popen(
        [*VECTIS, *args], stdout=out, stderr=subprocess.STDOUT, env=child_env(env)
    )
    proc = Proc(popen, log)
    try:
        if ready_url is not None:
            wait_ready(ready_url, proc, timeout)
        yield proc
    finally:
        proc.stop()
        out.close()


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run one `vectis` command to completion, capturing stdout and stderr apart."""
    return subprocess.run(
        [*VECTIS, *args],
        env=child_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- a dashboard in this process (tests of its parts, without HTTP) -----------------------------


def in_process_env(tmp_path: Path, token: str, **more: str) -> dict[str, str]:
    """The settings of a dashboard run in the test's process: its data under `tmp_path`,
    enrollment `token`, the test networks, and `more`."""
    from tests.conftest import TEST_NETWORKS

    return {
        "VECTIS_DATA_DIR": str(tmp_path / "data"),
        "VECTIS_TOKEN": token,
        "VECTIS_WORKER_NETWORKS": TEST_NETWORKS,
        **more,
    }


async def heartbeat_in_process(
    dash: Dashboard, worker_id: str, secret: str, **body: Any
) -> dict[str, Any]:
    """A heartbeat signed with `secret` (127.0.0.1:3000, applied revision 0, then `body`),
    handed to `dash` as its route would; the decoded answer."""
    from vectis.crypto.secrets import key_from_secret
    from vectis.crypto.signing import new_nonce, sign_request

    raw = json.dumps({"ip": "127.0.0.1", "port": 3000, "applied_revision": 0, **body}).encode()
    path = f"/infra/workers/{worker_id}/heartbeat"
    auth = sign_request(key_from_secret(secret), worker_id, "POST", path, raw,
                        ts=int(time.time()), nonce=new_nonce(os.urandom))  # fmt: skip
    answer, _ = await dash.worker_calls.heartbeat(worker_id, path, auth, raw)
    return dict(json.loads(answer))
