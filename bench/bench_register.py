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
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loadgen import (  # bench/ is the script's directory, so it is on sys.path
    TRIVIAL,
    WrkResult,
    dashboard_command,
    dashboard_env,
    free_port,
    interleaved,
    load_average,
    print_medians,
    python_server,
    run_wrk,
    server,
    write_requests,
    wrk_arguments,
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
    wrk_arguments(parser, rounds=3, max_rate=4_000, what="registrations prepared")
    parser.add_argument("--fleet", type=int, default=0, help="workers registered beforehand")
    args = parser.parse_args()
    wrk_binary()
    admin, enroll = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="vectis-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ports = {name: free_port() for name in ("dashboard", "trivial")}
        env = dashboard_env(admin, enroll)
        dash_cmd = dashboard_command(ports["dashboard"], tmp / "data")
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
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

            def run(name: str) -> WrkResult:
                nonlocal numbered
                if name == "dashboard":
                    lines = registrations(enroll, numbered, per_round)
                    write_requests(tmp / "once", lines, 1)
                    numbered += per_round
                    prefix, mode = tmp / "once", "once+created"
                else:
                    prefix, mode = tmp / "cycle", "cycle"
                return run_wrk(urls[name], prefix, mode, duration=args.duration,
                               pid=pids[name], **opts)  # fmt: skip

            results = interleaved(args.rounds, ["trivial", "dashboard"], run)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[WrkResult]]) -> None:
    print(
        f"\nwrk: 1 thread, {args.connections} connections, {args.rounds} rounds of "
        f"{args.duration:g} s per target, interleaved, a fleet of {args.fleet} beforehand; "
        "medians:"
    )
    rps = print_medians(results, {"trivial": "generator ceiling", "dashboard": "registration"})
    headroom = rps["trivial"] / rps["dashboard"]
    print(f"generator ceiling / registrations: {headroom:.1f}x (target >= 3.0x)")
    print(load_average())


if __name__ == "__main__":
    main()
