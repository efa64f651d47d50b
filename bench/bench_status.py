"""Time `vectis status --json` against `python -c "import typer, tomllib"` in the same run.

Usage: python bench/bench_status.py [--runs N]

Both commands run N times, interleaved so that load on the machine hits both alike; the
script prints the median wall time of each and their ratio (target: at most 1.5x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vectis.configfile import locked_conf
from vectis.crypto.secrets import create_secret_file
from vectis.status import SyncRecord, SyncStatus

TARGET = 1.5


def vectis_command() -> list[str]:
    """The installed `vectis` script beside this Python, else `python -m vectis`."""
    script = Path(sys.executable).parent / "vectis"
    if script.exists():
        return [str(script)]
    found = shutil.which("vectis")
    return [found] if found else [sys.executable, "-m", "vectis"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{cmd} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        conf_dir = Path(tmp)
        create_secret_file(conf_dir / "worker.secret")
        with locked_conf(conf_dir / "worker.conf") as conf:
            conf.state.id, conf.state.ip = "brave-otter-3f2a", "203.0.113.5"
            conf.state.sync = SyncRecord(SyncStatus.SYNCED, last_sync="2026-01-01T00:00:00Z")
            conf.settings.host = "127.0.0.1"
            conf.settings.port = 9  # discard: nothing listens, so the probe answers "stopped"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTIS_")}
        # As installed by pip: byte-code cached, not compiled from source on every run.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["VECTIS_CONFIG_DIR"] = str(conf_dir)
        status_cmd = [*vectis_command(), "status", "--json"]
        baseline_cmd = [sys.executable, "-c", "import typer, tomllib"]
        timed(status_cmd, env)  # warm the page cache and byte-code
        timed(baseline_cmd, env)
        status_times, baseline_times = [], []
        for _ in range(args.runs):
            status_times.append(timed(status_cmd, env))
            baseline_times.append(timed(baseline_cmd, env))
    status_ms = statistics.median(status_times) * 1000
    baseline_ms = statistics.median(baseline_times) * 1000
    ratio = status_ms / baseline_ms
    print(f"command:  {' '.join(status_cmd)}")
    print(f"vectis status --json:           median {status_ms:7.1f} ms over {args.runs} runs")
    print(f'python -c "import typer, tomllib": median {baseline_ms:7.1f} ms over {args.runs} runs')
    verdict = "ok" if ratio <= TARGET else "over target"
    print(f"ratio: {ratio:.2f}x (target <= {TARGET}x: {verdict})")


if __name__ == "__main__":
    main()
