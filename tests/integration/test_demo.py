"""`vectis demo` as a real process: workers synced through the API, a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.support import VECTIS, child_env, http


def _wait_for(log: Path, proc: subprocess.Popen[bytes], marker: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if marker in text:
            return text
        assert proc.poll() is None, f"demo exited with {proc.returncode}:\n{text}"
        time.sleep(0.05)
    raise AssertionError(f"demo not ready after {timeout} s:\n{log.read_text()}")


def test_demo_runs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*VECTIS, "demo", "--workers", "2"], stdout=stdout, stderr=stderr, env=child_env()
        )
    try:
        text = _wait_for(out, proc, "Press Ctrl-C")
        url = re.search(r"dashboard\s+(http://127\.0\.0\.1:\d+)/", text)
        token = re.search(r"admin token\s+(\S+)", text)
        assert url and token, text
        temp_dir = Path(re.search(r"Files and logs under (\S+) ", text).group(1))  # type: ignore[union-attr]
        assert temp_dir.is_dir()
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 3  # the dashboard and two worker daemons

        code, _, body = http(
            "GET",
            f"{url.group(1)}/infra/workers",
            headers={"Authorization": f"Bearer {token.group(1)}"},
        )
        assert code == 200, body
        workers = json.loads(body)["workers"]
        assert len(workers) == 2
        for worker in workers:
            assert worker["status"] == "synced", worker
            assert worker["stats"], worker
            assert worker["id"] in text and "sync_status:" in text
        assert len(re.findall(r"service:\s+running", text)) == 2, text

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, err.read_text()
        for child in children:
            gone = not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
            assert gone, f"{child.pid} {child.cmdline()} still running"
        assert not temp_dir.exists()
        assert "Traceback" not in err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
