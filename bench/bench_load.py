"""Load benchmark: the operator's admin list while a fleet heartbeats and the sweep runs.

Starts a real `vectis dashboard serve` (temporary data dir), registers N simulated workers
through the real API, serves them with bench/fleet.py (signed `/sync` endpoints), then for
`--seconds`:

- a separate process sends signed heartbeats for random workers at `--heartbeat-rate` per
  second over real HTTP, and verifies every answer's signature and content;
- the periodic sweep syncs the whole fleet (`VECTIS_SYNC_INTERVAL`), and one sync-all is
  triggered by the operator on top;
- the operator calls `GET /infra/workers` in a loop, timing each answer to its last byte,
  and checks that every registered worker is listed exactly once, every time (and does the
  same for 3 s before the load starts, for comparison).

It prints the p50/p90/p99/max latency of the admin list and the heartbeats' figures, and
exits 1 if any answer was wrong. Run on demand, not in CI (it stops by itself):

    python bench/bench_load.py                       # 1,000 workers, 20 s
    python bench/bench_load.py --workers 10000       # the target: admin list p99 < 100 ms
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_sweep  # bench/ is the script's directory, so it is on sys.path
import fleet
from loadgen import dashboard_command, dashboard_env

TARGET_WORKERS = 10_000
TARGET_P99_MS = 100.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


# -- heartbeats, in their own process ---------------------------------------------------------


async def _heartbeats(
    base: str, members: list[dict[str, Any]], rate: float, seconds: float, configs: dict[str, Any]
) -> dict[str, Any]:
    """Signed heartbeats at `rate` per second for `seconds`; counts and latencies."""
    import aiohttp

    from vectis import __version__
    from vectis.crypto.signing import SIGNATURE_HEADER, new_nonce, sign_request, verify_response

    rng = random.Random(8)
    latencies: list[float] = []
    errors: list[str] = []
    inflight: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, m: dict[str, Any]) -> None:
        path = f"/infra/workers/{m['id']}/heartbeat"
        body = json.dumps(
            {"ip": m["ip"], "version": __version__, "port": m["port"], "applied_revision": 0}
        ).encode()
        key = bytes.fromhex(m["secret"])
        nonce = new_nonce(os.urandom)
        auth = sign_request(key, m["id"], "POST", path, body, ts=int(time.time()), nonce=nonce)
        start = time.perf_counter()
        try:
            async with session.post(
                base + path,
                data=body,
                headers={"Authorization": auth, "Content-Type": "application/json"},
            ) as resp:
                raw = await resp.read()
                took = time.perf_counter() - start
                if resp.status != 200:
                    errors.append(f"{m['id']}: {resp.status} {raw[:120]!r}")
                    return
                verify_response(key, m["id"], nonce, 200, raw, resp.headers.get(SIGNATURE_HEADER))
                doc = json.loads(raw)
                want = configs.get(m["id"])
                if want is not None and doc.get("config") != want:
                    errors.append(f"{m['id']}: config {doc.get('config')} instead of {want}")
                latencies.append(took)
        except Exception as exc:  # a benchmark counts failures, it does not stop on them
            errors.append(f"{m['id']}: {type(exc).__name__}: {exc}")

    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter() - start) < seconds:
            due = int(now * rate) - sent
            for _ in range(due):
                task = asyncio.create_task(one(session, rng.choice(members)))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            sent += max(due, 0)
            await asyncio.sleep(0.005)
        if inflight:
            await asyncio.wait(inflight, timeout=30)
    return {"sent": sent, "latencies": latencies, "errors": errors[:20], "failed": len(errors)}


def _heartbeat_process(
    base: str,
    members: list[dict[str, Any]],
    rate: float,
    seconds: float,
    configs: dict[str, Any],
    out: Any,
) -> None:
    out.put(asyncio.run(_heartbeats(base, members, rate, seconds, configs)))


# -- the operator -----------------------------------------------------------------------------


def _list_loop(
    port: int, token: str, ids: set[str], seconds: float
) -> tuple[list[float], list[float], list[str]]:
    """GET /infra/workers in a loop; latency to the first and last byte, and any wrong answer."""
    latencies: list[float] = []
    first_byte: list[float] = []
    wrong: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        conn.request("GET", "/infra/workers", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        first_byte.append(time.perf_counter() - start)
        raw = resp.read()
        latencies.append(time.perf_counter() - start)
        if resp.status != 200:
            wrong.append(f"list answered {resp.status}")
            continue
        listed = [w["id"] for w in json.loads(raw)["workers"]]
        if len(listed) != len(ids) or set(listed) != ids:
            wrong.append(f"list has {len(listed)} workers ({len(set(listed))} distinct)")
    conn.close()
    return latencies, first_byte, wrong


def _probe_process(port: int, seconds: float, out: Any) -> None:
    """GET /healthz every 20 ms: how long any answer waits on the dashboard's event loop.

    A process of its own, so the operator's parsing of each list never delays its timing.
    """
    latencies: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        latencies.append(time.perf_counter() - start)
        time.sleep(0.02)
    conn.close()
    out.put(latencies)


def run(args: argparse.Namespace) -> int:
    fleet.raise_nofile()
    admin, enroll = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    port = bench_sweep.free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="vectis-load-") as tmp:
        log = Path(tmp) / "dashboard.log"
        env = dashboard_env(
            admin,
            enroll,
            VECTIS_SYNC_INTERVAL=str(args.sweep_interval),
            PYTHONUNBUFFERED="1",
        )
        if args.sync_concurrency:
            env["VECTIS_SYNC_CONCURRENCY"] = str(args.sync_concurrency)
        command = dashboard_command(port, Path(tmp) / "data")
        members, socks = fleet.bind(args.workers)
        try:
            with bench_sweep.dashboard_process(command, env, log, base):
                return _measure(args, base, port, admin, enroll, members, socks)
        finally:
            if args.keep_log:
                shutil.copyfile(log, args.keep_log)


def _measure(
    args: argparse.Namespace,
    base: str,
    port: int,
    admin: str,
    enroll: str,
    members: list[fleet.Member],
    socks: list[Any],
) -> int:
    n = len(members)
    start = time.perf_counter()
    errors = asyncio.run(bench_sweep.register_all(base, enroll, members, 32))
    if errors:
        print(f"registration: {len(errors)} of {n} failed, e.g. {errors[0]}")
        for sock in socks:
            sock.close()
        return 1
    print(f"registration: {n} workers in {time.perf_counter() - start:.1f} s")
    ids = {m.id for m in members}
    # A few workers get a config, which their heartbeat answers must then carry.
    configs: dict[str, Any] = {}
    for m in members[:: max(1, n // 20)]:
        configs[m.id] = {"bench": m.id}
        status, doc = bench_sweep.call(
            "PUT", f"{base}/infra/workers/{m.id}/config", admin, 30, configs[m.id]
        )
        if status != 200:
            print(f"set config: {status} {doc}")
            return 1
    idle, idle_first, wrong = _list_loop(port, admin, ids, 3.0)
    idle_ms = [x * 1000 for x in idle]
    print(
        f"admin list, no load: {len(idle_ms)} calls, p50 {percentile(idle_ms, 50):.1f} ms, "
        f"p99 {percentile(idle_ms, 99):.1f} ms; first byte p50 "
        f"{percentile(idle_first, 50) * 1000:.1f} ms"
    )
    swarm = fleet.Fleet.start(members, socks, args.fleet_processes)
    try:
        roster = [{"id": m.id, "ip": m.ip, "port": m.port, "secret": m.secret} for m in members]
        results: Any = multiprocessing.get_context("spawn").Queue()
        beater = multiprocessing.get_context("spawn").Process(
            target=_heartbeat_process,
            args=(base, roster, args.heartbeat_rate, args.seconds, configs, results),
        )
        beater.start()
        sweep: dict[str, Any] = {}

        def sync_all() -> None:
            time.sleep(args.seconds / 3)  # mid-run, on top of the periodic sweeps
            t0 = time.perf_counter()
            sweep["status"], sweep["doc"] = bench_sweep.call(
                "POST", f"{base}/infra/workers/sync", admin, 600
            )
            sweep["seconds"] = time.perf_counter() - t0

        trigger = threading.Thread(target=sync_all, daemon=True)
        trigger.start()
        probed: Any = multiprocessing.get_context("spawn").Queue()
        prober = multiprocessing.get_context("spawn").Process(
            target=_probe_process, args=(port, args.seconds, probed)
        )
        prober.start()
        latencies, first, loaded_wrong = _list_loop(port, admin, ids, args.seconds)
        wrong += loaded_wrong
        beats = results.get(timeout=120)
        beater.join(30)
        trigger.join(600)
        probes = probed.get(timeout=120)
        prober.join(30)
    finally:
        swarm.stop()
    ms = [x * 1000 for x in latencies]
    first_ms = [x * 1000 for x in first]
    hb = [x * 1000 for x in beats["latencies"]]
    p99 = percentile(ms, 99)
    print(
        f"admin list ({n} workers): {len(ms)} calls, p50 {percentile(ms, 50):.1f} ms, "
        f"p90 {percentile(ms, 90):.1f} ms, p99 {p99:.1f} ms, max {max(ms):.1f} ms, "
        f"mean {statistics.fmean(ms):.1f} ms"
    )
    print(
        f"  of which to the first byte: p50 {percentile(first_ms, 50):.1f} ms, "
        f"p99 {percentile(first_ms, 99):.1f} ms"
    )
    if probes:
        probe_ms = [x * 1000 for x in probes]
        print(
            f"  /healthz meanwhile (the event loop's own delay): {len(probe_ms)} calls, "
            f"p50 {percentile(probe_ms, 50):.1f} ms, p99 {percentile(probe_ms, 99):.1f} ms"
        )
    if hb:
        print(
            f"heartbeats: {beats['sent']} sent ({beats['sent'] / args.seconds:.0f}/s), "
            f"{len(hb)} verified, {beats['failed']} failed; p50 {percentile(hb, 50):.1f} ms, "
            f"p99 {percentile(hb, 99):.1f} ms"
        )
    print(
        f"sync-all during the load: {sweep.get('status')} in {sweep.get('seconds', 0):.1f} s, "
        f"outcomes {json.dumps(sweep.get('doc'))}"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")
    if n >= TARGET_WORKERS:
        verdict = "met" if p99 < TARGET_P99_MS else "MISSED"
        print(f"target: admin list p99 under {TARGET_P99_MS:g} ms at {n} workers {verdict}")
    for problem in wrong[:5] + beats["errors"][:5]:
        print(f"wrong: {problem}")
    ok = not wrong and not beats["failed"] and sweep.get("status") == 200 and hb
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load")
    parser.add_argument("--heartbeat-rate", type=float, default=200.0, help="per second")
    parser.add_argument("--sweep-interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--fleet-processes", type=int, default=1)
    parser.add_argument(
        "--sync-concurrency", type=int, help="VECTIS_SYNC_CONCURRENCY (default: the dashboard's)"
    )
    parser.add_argument("--keep-log", metavar="FILE", help="copy the dashboard's log here")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
