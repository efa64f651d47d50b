"""Throughput of the dashboard's heartbeat that changes nothing, against a bare aiohttp endpoint.

Usage: python bench/bench_heartbeat.py [--workers N] [--duration S] [--rounds R]

Starts a real `vectis dashboard serve` (SQLite, no sweeps) and registers N workers through
the real API (`POST /infra/workers/auto-register`), then sends each one heartbeat so that the
next ones change nothing but "last seen". wrk (`apt-get install wrk`) then drives the
dashboard, a bare aiohttp endpoint (reads the body, answers a small JSON) and a trivial server
(the generator's own ceiling) in interleaved rounds, with heartbeats signed beforehand by each
worker's secret, the workers taken in turn, every nonce used once (bench/loadgen.py). Prints
requests/s and p99 of each, the median ratio (target >= 0.35x) and the generator's headroom
(target >= 3x). Every dashboard answer must be a signed 200. Run on demand, not in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loadgen import (  # bench/ is the script's directory, so it is on sys.path
    BARE,
    TRIVIAL,
    WrkResult,
    dashboard_command,
    dashboard_env,
    free_port,
    interleaved,
    load_average,
    median,
    print_medians,
    python_server,
    run_wrk,
    server,
    write_requests,
    wrk_arguments,
    wrk_binary,
)

from vectis import __version__
from vectis.crypto.secrets import generate_secret, key_from_secret
from vectis.crypto.signing import new_nonce, sign_request

RATIO_TARGET = 0.35
HEADROOM_TARGET = 3.0
FIRST_PORT = 21000


class Member:
    """One registered worker: where it says it is, its key and id."""

    def __init__(self, index: int) -> None:
        self.ip = f"127.77.{index // 100 // 250}.{index // 100 % 250 + 1}"
        self.port = FIRST_PORT + index % 100
        self.secret = generate_secret()
        self.key = key_from_secret(self.secret)
        self.id = ""
        self.body = b""


async def register_all(base: str, token: str, members: list[Member], concurrency: int) -> None:
    import aiohttp

    limit = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, m: Member) -> None:
        doc = {"ip": m.ip, "port": m.port, "secret": m.secret, "hostname": f"hb-{m.port}"}
        async with (
            limit,
            session.post(
                f"{base}/infra/workers/auto-register",
                json=doc,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            answer = await resp.json(content_type=None)
            if resp.status != 201:
                raise SystemExit(f"registration failed: {resp.status} {answer}")
            m.id = answer["id"]
            beat = {"ip": m.ip, "port": m.port, "version": __version__, "applied_revision": 0}
            m.body = json.dumps(beat, separators=(",", ":")).encode()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, m) for m in members))


def heartbeats(turns: Iterator[Member], count: int) -> Iterator[tuple[str, str, bytes]]:
    """`count` signed heartbeats of the next workers in turn, stamped now."""
    ts = int(time.time())
    for m in itertools.islice(turns, count):
        path = f"/infra/workers/{m.id}/heartbeat"
        nonce = new_nonce(os.urandom)
        yield path, sign_request(m.key, m.id, "POST", path, m.body, ts=ts, nonce=nonce), m.body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=30_000)
    wrk_arguments(parser, rounds=5, max_rate=16_000, what="heartbeats signed")
    args = parser.parse_args()
    wrk_binary()
    admin, enroll = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="vectis-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ports = {name: free_port() for name in ("dashboard", "bare", "trivial")}
        env = dashboard_env(admin, enroll, VECTIS_NONCE_CAPACITY="10000000")
        cmds = {
            "dashboard": dashboard_command(ports["dashboard"], tmp / "data"),
            "bare": python_server(BARE, ports["bare"]),
            "trivial": python_server(TRIVIAL, ports["trivial"]),
        }
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        members = [Member(i) for i in range(args.workers)]
        with (
            server(cmds["dashboard"], ports["dashboard"], env, tmp / "dash.log") as dash_pid,
            server(cmds["bare"], ports["bare"], env, tmp / "bare.log") as bare_pid,
            server(cmds["trivial"], ports["trivial"], env, tmp / "trivial.log") as trivial_pid,
        ):
            pids = {"dashboard": dash_pid, "bare": bare_pid, "trivial": trivial_pid}
            started = time.perf_counter()
            asyncio.run(register_all(urls["dashboard"], enroll, members, 32))
            print(f"registered {len(members)} workers in {time.perf_counter() - started:.1f} s")
            turns = itertools.cycle(members)
            opts = {"threads": 1, "connections": args.connections}
            # Each worker's first heartbeat records its version: every later one changes nothing.
            write_requests(tmp / "once", heartbeats(turns, len(members)), 1)
            # wrk stops once every line is sent: time enough for a slow store, no more.
            warm = max(10.0, len(members) / 100)
            first = run_wrk(urls["dashboard"], tmp / "once", "once+signed", duration=warm, **opts)
            print(f"first heartbeat of each worker: {first.requests} sent, {first.wrong} wrong")
            write_requests(tmp / "cycle", heartbeats(turns, 20_000), 1)
            per_round = math.ceil(args.max_rate * args.duration)

            def run(name: str) -> WrkResult:
                if name == "dashboard":
                    write_requests(tmp / "once", heartbeats(turns, per_round), 1)
                    prefix, mode = tmp / "once", "once+signed"
                else:
                    prefix, mode = tmp / "cycle", "cycle"
                return run_wrk(urls[name], prefix, mode, duration=args.duration,
                               pid=pids[name], **opts)  # fmt: skip

            results = interleaved(args.rounds, ["trivial", "bare", "dashboard"], run)
        report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[WrkResult]]) -> None:
    print(
        f"\n{args.workers} workers; wrk: 1 thread, {args.connections} connections, {args.rounds} "
        f"rounds of {args.duration:g} s per target, interleaved; medians:"
    )
    labels = {
        "trivial": "generator ceiling",
        "bare": "bare aiohttp endpoint",
        "dashboard": "dashboard heartbeat",
    }
    rps = print_medians(results, labels)
    pairs = zip(results["dashboard"], results["bare"], strict=True)
    ratios = [d.rps / b.rps for d, b in pairs]
    ratio = median(ratios)
    headroom = rps["trivial"] / max(rps["bare"], rps["dashboard"])
    print(
        f"dashboard/bare requests/s: {ratio:.2f}x median of "
        f"{', '.join(f'{r:.2f}' for r in ratios)} "
        f"(target >= {RATIO_TARGET}x: {'ok' if ratio >= RATIO_TARGET else 'below'})"
    )
    print(
        f"generator ceiling / fastest measured server: {headroom:.1f}x "
        f"(target >= {HEADROOM_TARGET}x: {'ok' if headroom >= HEADROOM_TARGET else 'too low'})"
    )
    print(load_average())


if __name__ == "__main__":
    main()
