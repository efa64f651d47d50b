"""The load generator the server benchmarks share: wrk with pre-signed requests, on loopback.

A Python client tops out near 4,400 requests/s here, below what a bare aiohttp endpoint
answers, so a benchmark driven by one measures the client. wrk (C, one thread) sends requests
that Python signed beforehand, one per line of a file that `presigned.lua` walks through, each
nonce at most once; `trivial_server()` answers any request with fixed bytes, so wrk's figure
against it is the generator's own ceiling, printed beside every result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("presigned.lua")

#: A server that answers every request (sized by its Content-Length) with the same bytes.
TRIVIAL = r"""
import asyncio, sys

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
          b'{"status":"ok"}')

class Fixed(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        buf, answers = self.buf + data, 0
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head, length = buf[:end].lower(), 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(buf) < end + 4 + length:
                break
            buf, answers = buf[end + 4 + length :], answers + 1
        self.buf = buf
        if answers:
            self.transport.write(ANSWER * answers)

async def main():
    server = await asyncio.get_running_loop().create_server(Fixed, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()

asyncio.run(main())
"""

#: A bare aiohttp endpoint: reads the body of any POST and answers a small JSON.
BARE = """
import sys
from aiohttp import web

async def answer(request):
    await request.read()
    return web.json_response({"status": "online"})

async def healthz(request):
    return web.json_response({"status": "ok"})

app = web.Application()
app.router.add_get("/healthz", healthz)
app.router.add_post("/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def wrk_binary() -> str:
    """The `wrk` on PATH, or exit saying how to get it."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "wrk is not installed: 'apt-get install wrk' on Debian or Ubuntu "
            "(or build https://github.com/wg/wrk); it drives the servers in this benchmark"
        )
    return found


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
    """Run a server until the block ends; yields its pid once /healthz answers."""
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
class WrkResult:
    """One wrk run: wrk's own summary plus the script's counts of wrong answers."""

    requests: int
    seconds: float
    p50_us: int
    p99_us: int
    max_us: int
    bad_status: int
    unsigned: int
    exhausted: int
    socket_errors: int
    server_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def wrong(self) -> int:
        """Answers that were not what the server must give, and requests that failed."""
        return self.bad_status + self.unsigned + self.socket_errors

    def line(self, name: str) -> str:
        cpu = self.server_cpu / max(1, self.requests) * 1e6
        ran_out = "; RAN OUT of requests: raise --max-rate" if self.exhausted else ""
        return (
            f"{name:<24} {self.rps:8.0f} req/s  p50 {self.p50_us / 1000:6.2f} ms  "
            f"p99 {self.p99_us / 1000:6.2f} ms  server CPU {cpu:4.0f} us/req  "
            f"({self.requests} requests, {self.wrong} wrong{ran_out})"
        )


def write_requests(prefix: Path, lines: Iterable[tuple[str, str, bytes]], threads: int) -> int:
    """Spread (path, Authorization, body) lines over one file per wrk thread; the count."""
    count = 0
    with ExitStack() as stack:
        outs = [
            stack.enter_context(Path(f"{prefix}.{i}").open("w", encoding="ascii"))
            for i in range(threads)
        ]
        for count, (path, authz, body) in enumerate(lines, 1):
            text = body.decode("ascii")
            assert "\t" not in authz + path + text and "\n" not in authz + path + text
            outs[count % threads].write(f"{path}\t{authz}\t{text}\n")
    return count


def run_wrk(
    url: str,
    prefix: Path,
    mode: str,
    *,
    threads: int,
    connections: int,
    duration: float,
    pid: int | None = None,
) -> WrkResult:
    """One wrk run of `duration` seconds against `url` with the requests under `prefix`."""
    cmd = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
        "--",
        str(prefix),
        mode,
    ]
    cpu = cpu_seconds(pid) if pid is not None else 0.0
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    server_cpu = cpu_seconds(pid) - cpu if pid is not None else 0.0
    for line in done.stdout.splitlines():
        if line.startswith("VECTIS-WRK "):
            return WrkResult(**json.loads(line.split(" ", 1)[1]), server_cpu=server_cpu)
    raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout[-800:]}{done.stderr[-800:]}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def python_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without VECTIS_* settings, byte-code cached as installed, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTIS_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def python_server(code: str, port: int) -> list[str]:
    return [sys.executable, "-c", code, str(port)]


def wrk_arguments(
    parser: argparse.ArgumentParser, *, rounds: int, max_rate: int, what: str
) -> None:
    """The options every wrk benchmark takes: --duration, --rounds, --connections and
    --max-rate (`what` is prepared per second of a run, so that no run runs out)."""
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument(
        "--rounds", type=int, default=rounds, help="interleaved runs of each target"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--max-rate", type=int, default=max_rate, help=f"{what} per second of a run"
    )


def dashboard_env(admin: str, enroll: str, **more: str) -> dict[str, str]:
    """A benchmarked dashboard's environment: the tokens, no periodic sweeps, loopback workers
    allowed, and `more`."""
    return python_env(
        {
            "VECTIS_ADMIN_TOKEN": admin,
            "VECTIS_TOKEN": enroll,
            "VECTIS_SYNC_INTERVAL": "0",
            "VECTIS_WORKER_NETWORKS": "127.0.0.0/8",
            **more,
        }
    )


def dashboard_command(port: int, data_dir: Path) -> list[str]:
    """`vectis dashboard serve` on a loopback port with its data in `data_dir`."""
    command = [sys.executable, "-m", "vectis", "dashboard", "serve", "--host", "127.0.0.1"]
    return [*command, "--port", str(port), "--data-dir", str(data_dir)]


def interleaved(
    rounds: int, order: Sequence[str], run: Callable[[str], WrkResult]
) -> dict[str, list[WrkResult]]:
    """`run` each target once a round, in `order` and reversed every other round (so that no
    target always runs first), printing each run; the runs of each target."""
    results: dict[str, list[WrkResult]] = {name: [] for name in order}
    for n in range(1, rounds + 1):
        for name in order if n % 2 else order[::-1]:
            got = run(name)
            results[name].append(got)
            print(f"round {n}: {got.line(name)}", flush=True)
    return results


def print_medians(results: dict[str, list[WrkResult]], labels: dict[str, str]) -> dict[str, float]:
    """One line of medians per target (requests/s, p99, the server's CPU per request) and its
    wrong answers; the median requests/s of each."""
    rps = {}
    for name, label in labels.items():
        runs = results[name]
        rps[name] = median([r.rps for r in runs])
        p99 = median([r.p99_us for r in runs]) / 1000
        cpu = median([r.server_cpu / max(1, r.requests) * 1e6 for r in runs])
        wrong = sum(r.wrong + r.exhausted for r in runs)
        print(
            f"{label:<24} {rps[name]:8.0f} req/s  p99 {p99:6.2f} ms  "
            f"server CPU {cpu:5.0f} us/req  {wrong} wrong"
        )
    return rps


def load_average() -> str:
    return f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
