"""Throughput and CPU of the dashboard's registration (`POST /infra/workers/auto-register`).

Usage: python bench/bench_register.py [--duration S] [--rounds R] [--fleet N]

Starts a real `vectis dashboard serve` (SQLite, no sweeps, DNS backend none), optionally
fills it with N workers first (a registration's cost may grow with the fleet), then drives it
with wrk (`apt-get install wrk`) sending registrations prepared beforehand, each a new worker
(its own secret, address and port) with the enrollment token, every one sent once
(bench/loadgen.py, bench/presigned.lua). A trivial server is driven the same way in the same
rounds: the generator's own ceiling. Prints registrations/s, p99 and the dashboard's CPU per
registration of each round, and their medians. Every answer must be a 201. Run on demand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loadgen import (  # bench/ is the script's directory, so it is on sys.path
    TRIVIAL,
    WrkResult,
    free_port,
    median,
    python_env,
    python_server,
    run_wrk,
    server,
    write_requests,
    wrk_binary,
)

from vectis import __version__
from vectis.crypto.secrets import generate_secret

PATH = "/infra/workers/auto-register"
PORTS = 1000  # workers per address


def registrations(token: str, first: int, count: int) -> Iterator[tuple[str, str, bytes]]:
    """`count` registrations of new workers, numbered from `first`: (path, Authorization, body)."""
    for n in range(first, first + count):
        ip = f"127.{100 + n // PORTS // 250 % 150}.{n // PORTS % 250 + 1}.{n // PORTS // 37500 + 1}"
        doc = {
            "ip": ip,
            "port": 1024 + n % PORTS,
            "secret": generate_secret(),
            "hostname": f"reg-{n}",
            "version": __version__,
        }
        yield PATH, f"Bearer {token}", json.dumps(doc, separators=(",", ":")).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--fleet", type=int, default=0, help="workers registered beforehand")
    parser.add_argument(
        "--max-rate", type=int, default=4_000, help="registrations prepared per second of a run"
    )
    args = parser.parse_args()
    wrk_binary()
    admin, enroll = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="vectis-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ports = {name: free_port() for name in ("dashboard", "trivial")}
        env = python_env(
            {
                "VECTIS_ADMIN_TOKEN": admin,
                "VECTIS_TOKEN": enroll,
                "VECTIS_SYNC_INTERVAL": "0",
                "VECTIS_WORKER_NETWORKS": "127.0.0.0/8",
            }
        )
        dash_cmd = [sys.executable, "-m", "vectis", "dashboard", "serve", "--host", "127.0.0.1"]
        dash_cmd += ["--port", str(ports["dashboard"]), "--data-dir", str(tmp / "data")]
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        results: dict[str, list[WrkResult]] = {name: [] for name in ports}
        opts = {"threads": 1, "connections": args.connections}
        with (
            server(dash_cmd, ports["dashboard"], env, tmp / "dash.log") as dash_pid,
            server(python_server(TRIVIAL, ports["trivial"]), ports["trivial"], env,
                   tmp / "trivial.log") as trivial_pid,
        ):  # fmt: skip
            pids = {"dashboard": dash_pid, "trivial": trivial_pid}
            numbered = 0
            if args.fleet:
                write_requests(tmp / "fleet", registrations(enroll, 0, args.fleet), 1)
                got = run_wrk(urls["dashboard"], tmp / "fleet", "once+created",
                              duration=max(10.0, args.fleet / 100), **opts)  # fmt: skip
                numbered = args.fleet
                print(f"fleet of {got.requests} registered beforehand, {got.wrong} wrong")
            write_requests(tmp / "cycle", registrations(enroll, 10**7, 20_000), 1)
            per_round = math.ceil(args.max_rate * args.duration)
            order = ["trivial", "dashboard"]
            for n in range(1, args.rounds + 1):
                for name in order if n % 2 else order[::-1]:
                    if name == "dashboard":
                        lines = registrations(enroll, numbered, per_round)
                        write_requests(tmp / "once", lines, 1)
                        numbered += per_round
                        prefix, mode = tmp / "once", "once+created"
                    else:
                        prefix, mode = tmp / "cycle", "cycle"
                    got = run_wrk(urls[name], prefix, mode, duration=args.duration,
                                  pid=pids[name], **opts)  # fmt: skip
                    results[name].append(got)
                    print(f"round {n}: {got.line(name)}", flush=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[WrkResult]]) -> None:
    print(
        f"\nwrk: 1 thread, {args.connections} connections, {args.rounds} rounds of "
        f"{args.duration:g} s per target, interleaved, a fleet of {args.fleet} beforehand; "
        "medians:"
    )
    labels = {"trivial": "generator ceiling", "dashboard": "registration"}
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
    headroom = rps["trivial"] / rps["dashboard"]
    print(f"generator ceiling / registrations: {headroom:.1f}x (target >= 3.0x)")
    print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
