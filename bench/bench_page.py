"""The fleet page and the admin list on a large fleet, measured in Debian's headless Chromium.

Starts one real `vectis dashboard serve` (temporary SQLite, sweeps off), registers N workers
through the real auto-register API (at loopback addresses where nothing listens), then prints:

- one page of the list, `GET /infra/workers?limit=100`: client latency (median and p99 of
  200 calls over one keep-alive connection) and the dashboard's CPU per call, beside the same
  for `GET /healthz` (the floor of any answer here, measured by the same client);
- a search, `?q=<a hostname part>&limit=100`, the same way;
- label selectors, the same way: `?selector=role=edge` (9 workers in 10 carry it),
  `?selector=rack=r777` (1 in 1,000), and the summary of the latter;
- in Chromium: the time from pressing Log in to the first row, the time from typing a
  worker's id (one that is on no early page) in Search to its row, the bytes the page
  fetches in 10 idle seconds, and the dashboard's CPU per idle refresh.

Targets (issue: the fleet page at 100,000): first row under 2 s, idle traffic under 100 KB per
10 s, search under 1 s, one page under 50 ms. Run on demand, not in CI:

    python bench/bench_page.py                     # 100,000 workers (registration ~1 min)
    python bench/bench_page.py --workers 20000 --screenshot docs/fleet-large.png
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench_sweep import free_port, stop, wait_ready  # bench/ is on sys.path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def register(port: int, token: str, n: int) -> list[str]:
    """n workers at 127.2.x.y port 1 (nothing listens there), over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ids = []
    started = time.perf_counter()
    for i in range(n):
        body = {
            "ip": f"127.2.{i // 250 % 256}.{1 + i % 250}"
            if i < 64000
            else f"127.3.{i // 250 % 256}.{1 + i % 250}",
            "port": 1 + i // 128000,
            "secret": secrets.token_hex(32),
            "hostname": f"node-{i:06d}.edge.example",
            "labels": {"role": "core" if i % 10 == 0 else "edge", "rack": f"r{i % 1000}"},
        }
        conn.request(
            "POST",
            "/infra/workers/auto-register",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {token}"},
        )
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        if resp.status != 201:
            sys.exit(f"registration {i} answered {resp.status}: {doc}")
        ids.append(doc["id"])
        if i and i % 20000 == 0:
            print(f"  registered {i} ({i / (time.perf_counter() - started):.0f}/s)", flush=True)
    conn.close()
    return ids


def timed_calls(
    port: int, path: str, token: str, count: int, pid: int
) -> tuple[float, float, float]:
    """(median ms, p99 ms, dashboard CPU ms per call) of `count` GETs of `path`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    proc = psutil.Process(pid)
    headers = {"Authorization": f"Bearer {token}"}
    times = []
    cpu0 = sum(proc.cpu_times()[:2])
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        times.append((time.perf_counter() - started) * 1000)
        if resp.status != 200:
            sys.exit(f"{path} answered {resp.status}")
    cpu = (sum(proc.cpu_times()[:2]) - cpu0) * 1000 / count
    conn.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], cpu


def browser(url: str, admin: str, target: str, pid: int, screenshot: str | None) -> None:
    from playwright.sync_api import expect, sync_playwright

    proc = psutil.Process(pid)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.get_by_label("Admin token").fill(admin)
        started = time.perf_counter()
        page.get_by_role("button", name="Log in").click()
        page.locator("[data-worker-id]").first.wait_for(timeout=60_000)
        first_row = time.perf_counter() - started
        print(f"page: first row {first_row:.2f} s after Log in (target < 2 s)")
        print(f"page: {page.locator('[data-worker-id]').count()} rows held by the browser")

        started = time.perf_counter()
        page.get_by_label("Search").fill(target)
        expect(page.locator(f'[data-worker-id="{target}"]')).to_be_visible(timeout=30_000)
        took = time.perf_counter() - started
        print(
            f"page: search for {target} shows its row in {took:.2f} s (target < 1 s; "
            "includes the page's 0.25 s typing pause)"
        )
        page.get_by_label("Search").fill("")
        page.wait_for_timeout(3000)  # the list is back and refreshed once

        fetched: list[int] = []

        def count(request: object) -> None:
            sizes = request.sizes()  # type: ignore[attr-defined]
            fetched.append(sizes["responseBodySize"] + sizes["responseHeadersSize"])

        page.on("requestfinished", count)
        cpu0 = sum(proc.cpu_times()[:2])
        page.wait_for_timeout(10_000)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        page.remove_listener("requestfinished", count)
        requests = max(1, len(fetched))
        print(
            f"page: {sum(fetched) / 1024:.1f} KB in {len(fetched)} requests over 10 idle seconds "
            f"(target < 100 KB); dashboard CPU {cpu * 1000 / requests:.1f} ms per idle request"
        )
        if screenshot:
            page.screenshot(path=screenshot, full_page=False)
            print(f"page: screenshot written to {screenshot}")
        chromium.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=100_000)
    parser.add_argument("--screenshot", help="write a PNG of the fleet page here")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium")
    admin, enroll = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="vectis-bench-page-") as tmp:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VECTIS_")},
            "VECTIS_DATA_DIR": str(Path(tmp) / "data"),
            "VECTIS_ADMIN_TOKEN": admin,
            "VECTIS_TOKEN": enroll,
            "VECTIS_SYNC_INTERVAL": "0",
            "VECTIS_WORKER_NETWORKS": "127.0.0.0/8",  # the simulated fleet
        }
        log = Path(tmp) / "dashboard.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vectis", "dashboard", "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url + "/healthz", proc, log)
            started = time.perf_counter()
            ids = register(port, enroll, args.workers)
            took = time.perf_counter() - started
            print(f"fleet: {len(ids)} workers registered in {took:.1f} s")
            for what, path in (
                ("floor", "/healthz"),
                ("one page", "/infra/workers?limit=100"),
                ("a later page", None),
                ("search", "/infra/workers?limit=100&q=node-0777"),
                ("summary", "/infra/workers/summary"),
                ("selector", "/infra/workers?limit=100&selector=role%3Dedge"),
                ("narrow sel.", "/infra/workers?limit=100&selector=rack%3Dr777"),
                ("its summary", "/infra/workers/summary?selector=rack%3Dr777"),
            ):
                if path is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request(
                        "GET",
                        "/infra/workers?limit=1000",
                        headers={"Authorization": f"Bearer {admin}"},
                    )
                    cursor = json.loads(conn.getresponse().read())["next_cursor"]
                    conn.close()
                    path = f"/infra/workers?limit=100&cursor={cursor}"
                median, p99, cpu = timed_calls(port, path, admin, 200, proc.pid)
                print(
                    f"api: {what:12s} {path[:60]:60s} median {median:6.2f} ms  p99 {p99:6.2f} ms  "
                    f"dashboard CPU {cpu:5.2f} ms per call"
                )
            target = ids[len(ids) * 3 // 4]
            browser(url, admin, target, proc.pid, args.screenshot)
            rss = psutil.Process(proc.pid).memory_info().rss / 1e6
            load = os.getloadavg()[0]
            print(f"dashboard RSS {rss:.0f} MB; load average {load:.1f} on {os.cpu_count()} cores")
        finally:
            stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
