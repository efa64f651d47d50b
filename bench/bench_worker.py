"""Throughput and latency of the worker's `POST /sync` against a bare aiohttp endpoint.

Usage: python bench/bench_worker.py [--duration S] [--rounds R] [--connections N]

Starts a real `vectis worker serve` (registered, on a loopback port), a bare aiohttp app whose
POST answers a small JSON after reading the body, and a trivial server that answers any
request with fixed bytes. wrk (`apt-get install wrk`; one thread, N connections) drives each in
interleaved rounds with requests signed beforehand, every nonce used once (bench/loadgen.py,
bench/presigned.lua); each round is bounded by its duration and by its count of requests.
Prints requests/s, p50 and p99 of each, the median ratio over the rounds (target >= 0.8x, p99
within 2x of the bare endpoint's), the generator's ceiling against the trivial server (it must
reach 3x every figure it measures), and the CPU time of one stats collection (< 1 ms).
Every worker answer must be a 200 carrying a signature; a few are verified in full after each
round. Run on demand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from loadgen import (  # bench/ is the script's directory, so it is on sys.path
    BARE,
    TRIVIAL,
    WrkResult,
    median,
    python_env,
    python_server,
    run_wrk,
    server,
    write_requests,
    wrk_binary,
)
from loadgen import free_port as _free_port

from vectis.configfile import locked_conf
from vectis.crypto.secrets import create_secret_file, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, new_nonce, sign_request, verify_response

WID = "brave-otter-3f2a"
BODY = json.dumps({"revision": 1, "config": {"role": "edge", "limits": {"rps": 50}}}).encode()
RATIO_TARGET = 0.8
P99_TARGET = 2.0
HEADROOM_TARGET = 3.0
STATS_TARGET_MS = 1.0


def signed_lines(key: bytes, count: int) -> Iterator[tuple[str, str, bytes]]:
    """`count` signed /sync requests, each with its own nonce, stamped now."""
    ts = int(time.time())
    for _ in range(count):
        nonce = new_nonce(os.urandom)
        yield "/sync", sign_request(key, WID, "POST", "/sync", BODY, ts=ts, nonce=nonce), BODY


def check_worker(url: str, key: bytes, count: int = 3) -> None:
    """Signed requests whose answers are verified in full: a 200 signed with the secret."""
    for _ in range(count):
        nonce = new_nonce(os.urandom)
        header = sign_request(key, WID, "POST", "/sync", BODY, ts=int(time.time()), nonce=nonce)
        req = urllib.request.Request(
            url, data=BODY, method="POST", headers={"Authorization": header}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = resp.read()
            verify_response(key, WID, nonce, resp.status, answer, resp.headers[SIGNATURE_HEADER])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs of each target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--max-rate", type=int, default=40_000, help="worker requests signed per second of a run"
    )
    args = parser.parse_args()
    wrk_binary()
    per_round = math.ceil(args.max_rate * args.duration)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        conf_dir = tmp / "etc"
        create_secret_file(conf_dir / "worker.secret")
        key = key_from_secret((conf_dir / "worker.secret").read_text().strip())
        ports = {name: _free_port() for name in ("worker", "bare", "trivial")}
        with locked_conf(conf_dir / "worker.conf") as conf:
            conf.settings.host, conf.settings.port = "127.0.0.1", ports["worker"]
            conf.state.id, conf.state.ip = WID, "127.0.0.1"
            conf.state.reported_port = ports["worker"]
        # Every request spends a nonce for five minutes: make room for the whole run.
        env = python_env({"VECTIS_CONFIG_DIR": str(conf_dir), "VECTIS_NONCE_CAPACITY": "10000000"})
        cmds = {
            "worker": [sys.executable, "-m", "vectis", "worker", "serve"],
            "bare": python_server(BARE, ports["bare"]),
            "trivial": python_server(TRIVIAL, ports["trivial"]),
        }
        urls = {name: f"http://127.0.0.1:{port}/sync" for name, port in ports.items()}
        # The bare and trivial servers check nothing: they cycle through one set of requests.
        write_requests(tmp / "cycle", signed_lines(key, 20_000), args.threads)
        results: dict[str, list[WrkResult]] = {name: [] for name in ports}
        wrk_opts = {"threads": args.threads, "connections": args.connections}
        with (
            server(cmds["worker"], ports["worker"], env, tmp / "worker.log") as worker_pid,
            server(cmds["bare"], ports["bare"], env, tmp / "bare.log") as bare_pid,
            server(cmds["trivial"], ports["trivial"], env, tmp / "trivial.log") as trivial_pid,
        ):
            pids = {"worker": worker_pid, "bare": bare_pid, "trivial": trivial_pid}
            check_worker(urls["worker"], key)
            order = ["trivial", "bare", "worker"]
            for n in range(args.rounds + 1):  # round 0 warms every server up and is not kept
                for name in order if n % 2 else order[::-1]:
                    duration = 1.0 if n == 0 else args.duration
                    if name == "worker":
                        count = per_round if n else math.ceil(args.max_rate)
                        write_requests(tmp / "once", signed_lines(key, count), args.threads)
                        prefix, mode = tmp / "once", "once+signed"
                    else:
                        prefix, mode = tmp / "cycle", "cycle"
                    got = run_wrk(urls[name], prefix, mode, duration=duration, pid=pids[name],
                                  **wrk_opts)  # fmt: skip
                    if name == "worker":
                        check_worker(urls["worker"], key)
                    if n:
                        results[name].append(got)
                        print(f"round {n}: {got.line(name)}", flush=True)
        log_lines = len((tmp / "worker.log").read_text().splitlines())
    report(args, results, log_lines)


def report(args: argparse.Namespace, results: dict[str, list[WrkResult]], log_lines: int) -> None:
    print(
        f"\nwrk: {args.threads} thread, {args.connections} connections, {args.rounds} rounds of "
        f"{args.duration:g} s per target, interleaved; {len(BODY)}-byte body; medians:"
    )
    names = {
        "trivial": "generator ceiling",
        "bare": "bare aiohttp endpoint",
        "worker": "vectis worker /sync",
    }
    med: dict[str, tuple[float, float, float]] = {}
    for name, label in names.items():
        runs = results[name]
        rps = median([r.rps for r in runs])
        p50 = median([r.p50_us for r in runs]) / 1000
        p99 = median([r.p99_us for r in runs]) / 1000
        wrong = sum(r.wrong for r in runs)
        med[name] = (rps, p50, p99)
        print(f"{label:<24} {rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {wrong} wrong")
    ratios = [w.rps / b.rps for w, b in zip(results["worker"], results["bare"], strict=True)]
    ratio = median(ratios)
    p99_ratio = med["worker"][2] / med["bare"][2]
    headroom = med["trivial"][0] / max(med["bare"][0], med["worker"][0])
    wrong = sum(r.wrong + r.exhausted for r in results["worker"])
    print(
        f"worker/bare requests/s: {ratio:.2f}x median of {', '.join(f'{r:.2f}' for r in ratios)}"
        f" (target >= {RATIO_TARGET}x: {'ok' if ratio >= RATIO_TARGET else 'below'})"
    )
    print(
        f"worker/bare p99: {p99_ratio:.2f}x "
        f"(target <= {P99_TARGET}x: {'ok' if p99_ratio <= P99_TARGET else 'over'})"
    )
    print(
        f"generator ceiling / fastest measured server: {headroom:.1f}x "
        f"(target >= {HEADROOM_TARGET}x: {'ok' if headroom >= HEADROOM_TARGET else 'too low'})"
    )
    print(f"worker answers that were not a signed 200: {wrong}; worker log lines: {log_lines}")
    cost = stats_cpu_ms()
    verdict = "ok" if cost < STATS_TARGET_MS else "over"
    print(f"one stats collection: {cost:.3f} ms of CPU (target < {STATS_TARGET_MS} ms: {verdict})")
    print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def stats_cpu_ms(runs: int = 500) -> float:
    """CPU time of one uncached collection (psutil figures and their JSON)."""
    from vectis.worker.stats import StatsSampler

    sampler = StatsSampler(["/"])
    started = time.process_time()
    for _ in range(runs):
        sampler.refresh()
    return (time.process_time() - started) / runs * 1000


if __name__ == "__main__":
    main()
