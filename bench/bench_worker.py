"""Throughput and latency of the worker's `POST /sync` against a bare aiohttp endpoint.

Usage: python bench/bench_worker.py [--duration S] [--concurrency N] [--rounds R]

Starts a real `vectis worker serve` (registered, on a loopback port) and, in another process,
an aiohttp app whose POST /sync only reads the body and answers a small JSON. The same
concurrent aiohttp client drives both with signed requests, in alternating rounds of a fixed
duration, and prints requests/s, p50 and p99 for each and the ratio (target >= 0.6x); then
the CPU time of one stats collection (target < 1 ms). Run on demand, not in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vectis.configfile import locked_conf
from vectis.crypto.secrets import create_secret_file, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, new_nonce, sign_request, verify_response

WID = "brave-otter-3f2a"
BODY = json.dumps({"revision": 1, "config": {"role": "edge", "limits": {"rps": 50}}}).encode()
RATIO_TARGET = 0.6
STATS_TARGET_MS = 1.0

BARE = """
import sys
from aiohttp import web

async def sync(request):
    await request.read()
    return web.json_response({"status": "online"})

async def healthz(request):
    return web.json_response({"status": "ok"})

app = web.Application()
app.router.add_post("/sync", sync)
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready after {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(cmd: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    server_cpu: float = 0.0

    def line(self, name: str) -> str:
        lat = sorted(self.latencies)
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return (
            f"{name:<22} {self.rps:9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
            f"   server CPU {self.server_cpu / len(lat) * 1e6:5.0f} us/req"
            f"   ({len(lat)} requests, {self.errors} errors)"
        )

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


async def drive(url: str, key: bytes, duration: float, concurrency: int, result: Result) -> None:
    """The same client for both targets: signs every request, sends it, reads the answer."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + duration

        async def one_client() -> None:
            while time.perf_counter() < stop_at:
                nonce = new_nonce(os.urandom)
                header = sign_request(
                    key, WID, "POST", "/sync", BODY, ts=int(time.time()), nonce=nonce
                )
                started = time.perf_counter()
                async with session.post(url, data=BODY, headers={"Authorization": header}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        result.latencies.append(time.perf_counter() - started)
                    else:
                        result.errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        result.seconds += time.perf_counter() - started


def check_worker(url: str, key: bytes) -> None:
    """One request first: the worker's answer must be signed before anything is timed."""
    nonce = new_nonce(os.urandom)
    header = sign_request(key, WID, "POST", "/sync", BODY, ts=int(time.time()), nonce=nonce)
    req = urllib.request.Request(url, data=BODY, method="POST", headers={"Authorization": header})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = resp.read()
        verify_response(key, WID, nonce, 200, answer, resp.headers[SIGNATURE_HEADER])


def stats_cpu_ms(runs: int = 500) -> float:
    """CPU time of one uncached collection (psutil figures and their JSON)."""
    from vectis.worker.stats import StatsSampler

    sampler = StatsSampler(["/"])
    started = time.process_time()
    for _ in range(runs):
        sampler.refresh()
    return (time.process_time() - started) / runs * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        conf_dir = Path(tmp) / "etc"
        create_secret_file(conf_dir / "worker.secret")
        key = key_from_secret((conf_dir / "worker.secret").read_text().strip())
        worker_port, bare_port = free_port(), free_port()
        with locked_conf(conf_dir / "worker.conf") as conf:
            conf.settings.host, conf.settings.port = "127.0.0.1", worker_port
            conf.state.id, conf.state.ip = WID, "127.0.0.1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTIS_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # Every request spends a nonce for five minutes: make room for the whole run.
        env.update(VECTIS_CONFIG_DIR=str(conf_dir), VECTIS_NONCE_CAPACITY="10000000")
        worker_cmd = [sys.executable, "-m", "vectis", "worker", "serve"]
        bare_cmd = [sys.executable, "-c", BARE, str(bare_port)]
        worker_url = f"http://127.0.0.1:{worker_port}/sync"
        bare_url = f"http://127.0.0.1:{bare_port}/sync"
        bare, worker = Result(), Result()
        with (
            server(worker_cmd, worker_port, env, Path(tmp) / "worker.log") as worker_pid,
            server(bare_cmd, bare_port, env, Path(tmp) / "bare.log") as bare_pid,
        ):
            check_worker(worker_url, key)
            for _ in range(args.rounds):
                for url, pid, result in (
                    (bare_url, bare_pid, bare),
                    (worker_url, worker_pid, worker),
                ):
                    cpu = cpu_seconds(pid)
                    asyncio.run(drive(url, key, args.duration, args.concurrency, result))
                    result.server_cpu += cpu_seconds(pid) - cpu
    print(
        f"{args.rounds} rounds of {args.duration:g} s per target, {args.concurrency} concurrent "
        f"requests, {len(BODY)}-byte body"
    )
    print(bare.line("bare aiohttp endpoint"))
    print(worker.line("vectis worker /sync"))
    ratio = worker.rps / bare.rps
    verdict = "ok" if ratio >= RATIO_TARGET else "below"
    print(f"ratio of requests/s: {ratio:.2f}x (target >= {RATIO_TARGET}x: {verdict})")
    cost = stats_cpu_ms()
    verdict = "ok" if cost < STATS_TARGET_MS else "over"
    print(f"one stats collection: {cost:.3f} ms of CPU (target < {STATS_TARGET_MS} ms: {verdict})")


if __name__ == "__main__":
    main()
