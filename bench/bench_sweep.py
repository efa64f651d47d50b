"""Sweep benchmark: one real `vectis dashboard serve` syncing a simulated fleet.

Starts the dashboard (temporary data dir, periodic sweeps off), registers N workers through
the real auto-register API with the fleet's secrets and addresses, triggers
`POST /infra/workers/sync`, and prints the sweep time, syncs per second, the outcome counts
and the dashboard's peak RSS. Run on demand, not in CI:

    python bench/bench_sweep.py                      # 1,000 workers
    python bench/bench_sweep.py --workers 10000      # the target: < 10 s, < 200 MB RSS
    python bench/bench_sweep.py --workers 10000 --tls
        # then the same fleet over TLS (one key, each worker's pin registered): a sweep of
        # full handshakes, one that resumes the sessions, then (the fleet now allowing
        # keep-alive) one that keeps the connections and one more within the idle time, over
        # the kept connections; beside the plain figures. The target: at least 1,500 syncs/s

The fleet answers `Connection: close` except in the keep-alive sweeps, so that the others
measure a connection per sync; in those it keeps idle connections as long as the dashboard
does, where a real worker closes them after 10 s: the keep-alive figure is that of workers
synced again within 10 s. Beside each sweep: the dashboard's and the fleet's CPU per
sync, and what one core would do at that cost (the fleet shares this machine's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import fleet  # bench/ is the script's directory, so it is on sys.path
import psutil
from loadgen import dashboard_command, dashboard_env
from loadgen import free_port as free_port  # also bench_replicas', bench_load's and bench_page's

TARGET_WORKERS = 10_000
TARGET_SECONDS = 10.0
TARGET_RSS_MB = 200.0
TARGET_TLS_RATE = 1500.0  # syncs/s over TLS at 10,000 workers (issue 18)
KEEP_IDLE = 120.0  # seconds: longer than a sweep, so the next sweep finds the connections


def call(method: str, url: str, token: str, timeout: float, body: Any = None) -> tuple[int, Any]:
    """One JSON call with the standard library: (status, decoded body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the dashboard exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"the dashboard was not ready after {timeout} s:\n{log.read_text()}")


@contextmanager
def dashboard_process(
    command: list[str], env: dict[str, str], log: Path, base: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The dashboard of `command` running, its output in `log`, once `base` answers /healthz;
    stopped when the block ends."""
    with log.open("wb") as out:
        dash = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(f"{base}/healthz", dash, log)
            yield dash
        finally:
            stop(dash)


async def register_all(
    base: str,
    token: str,
    members: list[fleet.Member],
    concurrency: int,
    tls_pin: str | None = None,
    labels: Sequence[dict[str, str]] | None = None,
) -> list[str]:
    """Register every member through the real API, `concurrency` at a time (with `labels`,
    each member with its own); return errors."""
    import aiohttp

    limit = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(session: aiohttp.ClientSession, m: fleet.Member, n: int) -> None:
        body: dict[str, Any] = {"ip": m.ip, "port": m.port, "secret": m.secret}
        body["hostname"] = f"fleet-{m.port}"
        if tls_pin is not None:
            body["tls_pin"] = tls_pin  # the same secret again: 200, the pin stored
        if labels is not None:
            body["labels"] = labels[n]
        async with (
            limit,
            session.post(
                f"{base}/infra/workers/auto-register",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            doc = await resp.json(content_type=None)
            if resp.status not in (200, 201) or not isinstance(doc, dict) or "id" not in doc:
                errors.append(f"{m.ip}:{m.port}: {resp.status} {doc}")
                return
            m.id = doc["id"]

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(one(session, m, n) for n, m in enumerate(members)))
    return errors


class PeakRSS:
    """Samples a process's RSS in a thread until stopped; keeps the highest value."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def vm_hwm(pid: int) -> int | None:
    """The process's lifetime peak RSS in bytes, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the dashboard (collapsed stacks, one per line) until SIGINT."""
    command = ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    spy = subprocess.Popen(
        [*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1)  # py-spy attaches asynchronously and has no readiness signal to wait on
    return spy


def mb(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 1e6:.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="fleet")
    parser.add_argument("--register-concurrency", type=int, default=32)
    parser.add_argument("--sync-concurrency", type=int, help="VECTIS_SYNC_CONCURRENCY")
    parser.add_argument("--sync-timeout", type=float, help="VECTIS_SYNC_TIMEOUT (seconds)")
    parser.add_argument("--sync-threads", type=int, help="VECTIS_SYNC_THREADS")
    parser.add_argument("--profile", type=Path, help="run the dashboard under cProfile, to FILE")
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="sample the dashboard with py-spy during the sweep, to FILE (and each TLS sweep, "
        "to FILE-<sweep>)",
    )
    parser.add_argument("--log", type=Path, help="keep the dashboard's log in FILE")
    parser.add_argument(
        "--tls", action="store_true", help="then sweep the same fleet over TLS, twice"
    )
    args = parser.parse_args()

    fleet.raise_nofile()
    admin_token, enroll_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="vectis-bench-") as tmp:
        log = args.log or Path(tmp) / "dashboard.log"
        env = dashboard_env(
            admin_token,
            enroll_token,
            # Every worker's connection kept from one keep-alive sweep to the next (--tls).
            VECTIS_SYNC_KEEPALIVE=str(KEEP_IDLE),
            VECTIS_SYNC_KEEPALIVE_MAX=str(args.workers),
            PYTHONUNBUFFERED="1",
        )
        if args.sync_concurrency:
            env["VECTIS_SYNC_CONCURRENCY"] = str(args.sync_concurrency)
        if args.sync_timeout:
            env["VECTIS_SYNC_TIMEOUT"] = str(args.sync_timeout)
        if args.sync_threads:
            env["VECTIS_SYNC_THREADS"] = str(args.sync_threads)
        command = dashboard_command(port, Path(tmp) / "data")
        if args.profile:  # python -m cProfile -o FILE -m vectis dashboard serve ...
            command = [command[0], "-m", "cProfile", "-o", str(args.profile), *command[1:]]

        members, socks = fleet.bind(args.workers)
        addresses = len({m.ip for m in members})
        print(f"fleet: {len(members)} workers on {addresses} loopback address(es)")
        started = time.perf_counter()
        try:
            with dashboard_process(command, env, log, base) as dash:
                threads = env.get("VECTIS_SYNC_THREADS", "the default")
                print(
                    f"dashboard: pid {dash.pid}, ready in {time.perf_counter() - started:.2f} s, "
                    f"VECTIS_SYNC_THREADS {threads}"
                )
                return run(args, base, admin_token, enroll_token, dash.pid, members, socks)
        finally:
            for sock in socks:
                sock.close()


def run(
    args: argparse.Namespace,
    base: str,
    admin_token: str,
    enroll_token: str,
    pid: int,
    members: list[fleet.Member],
    socks: list[socket.socket],
) -> int:
    n = len(members)
    start = time.perf_counter()
    errors = asyncio.run(register_all(base, enroll_token, members, args.register_concurrency))
    took = time.perf_counter() - start
    if errors:
        print(f"registration: {len(errors)} of {n} failed, e.g. {errors[0]}")
        return 1
    print(f"registration: {n} workers in {took:.2f} s ({n / took:.0f}/s)")

    dashboard = psutil.Process(pid)
    # The fleet gets duplicates: these sockets stay bound for the TLS sweeps, so that no other
    # process on the machine takes their ports in between.
    swarm = fleet.Fleet.start(members, [s.dup() for s in socks], args.processes, keepalive=False)
    try:
        fleet_procs = [psutil.Process(p) for p in swarm.pids]
        fleet_cpu_before = sum(sum(p.cpu_times()[:2]) for p in fleet_procs)
        before = dashboard.memory_info().rss
        cpu_before = sum(dashboard.cpu_times()[:2])
        load = os.getloadavg()[0]
        spy = _py_spy(pid, args.py_spy) if args.py_spy else None
        with PeakRSS(pid) as sampler:
            start = time.perf_counter()
            status, doc = call("POST", f"{base}/infra/workers/sync", admin_token, 600)
            took = time.perf_counter() - start
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        hwm_sweep = vm_hwm(pid)
        dashboard_cpu = sum(dashboard.cpu_times()[:2]) - cpu_before
        fleet_cpu = sum(sum(p.cpu_times()[:2]) for p in fleet_procs) - fleet_cpu_before
    finally:
        swarm.stop()
    if status != 200:
        print(f"sweep: the dashboard answered {status}: {doc}")
        return 1
    _, listed = call("GET", f"{base}/infra/workers?status=synced", admin_token, 60)
    synced = len(listed.get("workers", [])) if isinstance(listed, dict) else 0
    hwm_list = vm_hwm(pid)
    print(f"sweep: {n} workers in {took:.2f} s, {n / took:.0f} syncs/s (plain HTTP)")
    print(f"outcomes: {json.dumps(doc)}; listed synced afterwards: {synced}/{n}")
    print(
        f"CPU during the sweep: dashboard {dashboard_cpu:.2f} s "
        f"({dashboard_cpu / n * 1e3:.2f} ms per sync), fleet {fleet_cpu:.2f} s; "
        f"load average {load:.1f} on {os.cpu_count()} cores when it started"
    )
    print(
        f"dashboard RSS: {mb(before)} before the sweep, peak {mb(sampler.peak)} during it "
        f"({sampler.samples} samples); lifetime peak (VmHWM) {mb(hwm_sweep)} after the sweep "
        f"(registration included), {mb(hwm_list)} after listing every worker"
    )
    # The target is about the sweep: registration and the full listing are reported apart.
    peak = sampler.peak
    if n >= TARGET_WORKERS:
        fast = "met" if took < TARGET_SECONDS else "MISSED"
        small = "met" if peak < TARGET_RSS_MB * 1e6 else "MISSED"
        print(
            f"targets: sweep under {TARGET_SECONDS:g} s {fast}; "
            f"RSS under {TARGET_RSS_MB:g} MB {small}"
        )
    if synced != n:
        return 1
    if args.tls:
        plain = Row("plain HTTP", took, dashboard_cpu, fleet_cpu, synced)
        return tls_sweeps(args, base, admin_token, enroll_token, dashboard, members, socks, plain)
    return 0


class Row(NamedTuple):
    label: str
    took: float
    cpu: float  # the dashboard's, seconds
    fleet_cpu: float
    synced: int


def sweep(
    base: str,
    admin_token: str,
    dashboard: psutil.Process,
    swarm: fleet.Fleet,
    label: str,
    n: int,
    spy_to: Path | None = None,
) -> Row | None:
    """One sweep of every worker, timed, with the CPU it cost either side (and py-spy's
    samples of the dashboard in `spy_to`, if given)."""
    spy = _py_spy(dashboard.pid, spy_to) if spy_to else None
    fleet_procs = [psutil.Process(p) for p in swarm.pids]
    fleet_before = sum(sum(p.cpu_times()[:2]) for p in fleet_procs)
    cpu_before = sum(dashboard.cpu_times()[:2])
    start = time.perf_counter()
    status, doc = call("POST", f"{base}/infra/workers/sync", admin_token, 600)
    took = time.perf_counter() - start
    cpu = sum(dashboard.cpu_times()[:2]) - cpu_before
    fleet_cpu = sum(sum(p.cpu_times()[:2]) for p in fleet_procs) - fleet_before
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    if status != 200 or doc.get("synced") != n:
        print(f"{label}: the dashboard answered {status}: {doc}")
        return None
    print(
        f"sweep: {n} workers in {took:.2f} s, {n / took:.0f} syncs/s ({label}); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    return Row(label, took, cpu, fleet_cpu, doc["synced"])


def tls_sweeps(
    args: argparse.Namespace,
    base: str,
    admin_token: str,
    enroll_token: str,
    dashboard: psutil.Process,
    members: list[fleet.Member],
    socks: list[socket.socket],
    plain: Row,
) -> int:
    """The same fleet over TLS, every worker's pin registered: a sweep of full handshakes, one
    of resumed sessions, then two with keep-alive allowed (the second over kept connections),
    printed beside the plain sweep's figures."""
    n = len(members)
    with tempfile.TemporaryDirectory(prefix="vectis-bench-tls-") as folder:
        context, pin = fleet.tls_context(Path(folder))
    start = time.perf_counter()
    errors = asyncio.run(
        register_all(base, enroll_token, members, args.register_concurrency, tls_pin=pin)
    )
    if errors:
        print(f"TLS pins: {len(errors)} of {n} failed, e.g. {errors[0]}")
        return 1
    print(
        f"TLS pins: {n} workers registered again with their pin "
        f"in {time.perf_counter() - start:.2f} s"
    )
    rows = [plain]
    phases = [
        (False, ["TLS, full handshakes"]),
        (False, ["TLS, sessions resumed"]),
        (True, ["TLS, connections kept", "TLS, keep-alive"]),
    ]
    for keepalive, labels in phases:
        dups = [s.dup() for s in socks]
        swarm = fleet.Fleet.start(members, dups, args.processes, tls=context, keepalive=keepalive)
        try:
            for label in labels:
                spy_to = None
                if args.py_spy:
                    suffix = "-" + "".join(c if c.isalnum() else "-" for c in label.lower())
                    spy_to = args.py_spy.with_name(args.py_spy.name + suffix)
                row = sweep(base, admin_token, dashboard, swarm, label, n, spy_to)
                if row is None:
                    return 1
                rows.append(row)
        finally:
            swarm.stop()
        c = swarm.counts()
        print(
            f"  the fleet served {c.requests} requests over {c.connections} connections: "
            f"{c.full} full TLS handshakes, {c.resumed} resumed"
        )
    print(
        f"{'':24}{'syncs/s':>9}{'dashboard CPU':>15}{'1 core':>9}{'fleet CPU':>12}{'1 core':>9}"
        f"{'both, 2 cores':>15}"
    )
    for r in rows:
        dash, sim = r.cpu / n, r.fleet_cpu / n
        print(
            f"{r.label:24}{n / r.took:>9.0f}{dash * 1e3:>12.2f} ms{1 / dash:>9.0f}"
            f"{sim * 1e3:>9.2f} ms{1 / sim:>9.0f}{2 / (dash + sim):>15.0f}"
        )
    print(
        "(CPU per sync; '1 core': the syncs/s one core would serve at that cost; 'both, 2 "
        "cores': the ceiling of this machine with the dashboard and the fleet on it, "
        f"other load aside; {os.cpu_count()} cores here)"
    )
    if n >= TARGET_WORKERS:
        verdicts = [
            f"{r.label} {n / r.took:.0f}/s {'met' if n / r.took >= TARGET_TLS_RATE else 'MISSED'}"
            for r in rows[1:]
        ]
        print(f"target: at least {TARGET_TLS_RATE:g} syncs/s over TLS: " + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
