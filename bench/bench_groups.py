"""Config-group burst benchmark: a group selecting 10,000 simulated workers changes, one sweep
brings them all to the new revision.

Starts one real `vectis dashboard serve` (temporary data dir, periodic sweeps off; SQLite, or
PostgreSQL with --database-url), registers N selected workers (`role=edge`) and M others
(`role=core`) through the real auto-register API with their labels, serves them all with the
simulated fleet (bench/fleet.py, which records every sync it answers), and sweeps once so
every worker is synced. Then, timed:

1. a sweep that changes nothing: the baseline of this run;
2. `PUT /infra/config/groups/edge` with a new config: the dashboard merges the config of every
   worker the group selects again, in one transaction, and gives each a new revision;
3. one sweep (`POST /infra/workers/sync`): every selected worker gets the new revision.

It checks from the fleet's own record that each selected worker was sent the new revision with
the merged config (and no other worker a new revision), and that the dashboard lists all the
selected workers `synced` at it; and prints the times, the ratio of the change's sweep to the
baseline sweep, and the simulated fleet's CPU (the load generator's share). Run on demand:

    python bench/bench_groups.py                         # 10,000 selected, 1,000 not
    python bench/bench_groups.py --postgresql            # on a throwaway PostgreSQL cluster
    python bench/bench_groups.py --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fleet  # bench/ is the script's directory, so it is on sys.path
import psutil
from bench_sweep import PeakRSS, call, dashboard_process, mb, register_all
from loadgen import dashboard_command, dashboard_env, free_port

TARGET_WORKERS = 10_000
SELECTED = {"role": "edge"}
OTHERS = {"role": "core"}


def sweep(base: str, token: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    status, doc = call("POST", f"{base}/infra/workers/sync", token, 600)
    took = time.perf_counter() - start
    if status != 200:
        sys.exit(f"sweep: the dashboard answered {status}: {doc}")
    return took, doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=TARGET_WORKERS, help="selected by the group")
    parser.add_argument("--others", type=int, default=1000, help="not selected")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="fleet")
    parser.add_argument("--register-concurrency", type=int, default=32)
    parser.add_argument("--database-url", help="a postgresql:// URL (default: SQLite)")
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="a throwaway PostgreSQL cluster (bench_replicas.py's, durable commits)",
    )
    parser.add_argument("--log", type=Path, help="keep the dashboard's log in FILE")
    args = parser.parse_args()
    if args.postgresql:
        from bench_replicas import BenchPg

        server = BenchPg.start_new()
        try:
            args.database_url = server.create_database()
            return measure(args)
        finally:
            server.destroy()
    return measure(args)


def measure(args: argparse.Namespace) -> int:
    fleet.raise_nofile()
    admin, enroll = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="vectis-bench-groups-") as tmp:
        log = args.log or Path(tmp) / "dashboard.log"
        env = dashboard_env(admin, enroll, PYTHONUNBUFFERED="1")
        if args.database_url:
            env["VECTIS_DATABASE_URL"] = args.database_url
        command = dashboard_command(port, Path(tmp) / "data")
        members, socks = fleet.bind(args.workers + args.others)
        labels = [SELECTED] * args.workers + [OTHERS] * args.others
        store = "PostgreSQL" if args.database_url else "SQLite"
        print(f"fleet: {args.workers} selected + {args.others} other workers; store: {store}")
        try:
            with dashboard_process(command, env, log, base) as dash:
                return run(args, base, admin, enroll, dash.pid, members, labels, socks)
        finally:
            for sock in socks:
                sock.close()


def run(
    args: argparse.Namespace,
    base: str,
    admin: str,
    enroll: str,
    pid: int,
    members: list[fleet.Member],
    labels: list[dict[str, str]],
    socks: list[Any],
) -> int:
    n, selected = len(members), args.workers
    start = time.perf_counter()
    errors = asyncio.run(
        register_all(base, enroll, members, args.register_concurrency, labels=labels)
    )
    if errors:
        print(f"registration: {len(errors)} of {n} failed, e.g. {errors[0]}")
        return 1
    print(f"registration: {n} workers with labels in {time.perf_counter() - start:.2f} s")
    # A group there from the start: the change below is to a config the workers run.
    group = {"selector": "role=edge", "priority": 10, "config": {"cache": "1g", "workers": 4}}
    status, doc = call("PUT", f"{base}/infra/config/groups/edge", admin, 600, group)
    if status != 201 or doc.get("reconfigured") != selected:
        print(f"group: the dashboard answered {status}: {doc}")
        return 1

    swarm = fleet.Fleet.start(members, socks, args.processes, record=True)
    dashboard = psutil.Process(pid)
    try:
        first, counts = sweep(base, admin)
        if counts.get("synced") != n:
            print(f"first sweep: {counts}")
            return 1
        print(f"first sweep (every worker to its first config): {first:.2f} s")
        procs = [psutil.Process(p) for p in swarm.pids]
        fleet_cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
        load = os.getloadavg()[0]
        baseline, _ = sweep(base, admin)
        base_fleet_cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - fleet_cpu

        group["config"] = {"cache": "2g", "workers": 4}
        cpu_before = sum(dashboard.cpu_times()[:2])
        with PeakRSS(pid) as rss:
            start = time.perf_counter()
            status, doc = call("PUT", f"{base}/infra/config/groups/edge", admin, 600, group)
            put_took = time.perf_counter() - start
            if status != 200 or doc.get("reconfigured") != selected:
                print(f"group change: the dashboard answered {status}: {doc}")
                return 1
            put_cpu = sum(dashboard.cpu_times()[:2]) - cpu_before
            fleet_cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
            changed_at = time.time()
            took, counts = sweep(base, admin)
            total = time.perf_counter() - start
        change_fleet_cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - fleet_cpu
    finally:
        swarm.stop()

    # What the fleet was sent after the change: each selected worker the new revision with
    # the merged config, once; the others nothing new.
    expected = fleet.config_digest(group["config"])
    after = [s for s in swarm.syncs() if s.at >= changed_at]
    new_revision = {s.member: s for s in after if s.revision == 2}
    right = sum(
        1 for i in range(selected) if i in new_revision and new_revision[i].config == expected
    )
    strays = sum(1 for i in new_revision if i >= selected)
    status, page = call("GET", f"{base}/infra/workers/summary?selector=role%3Dedge", admin, 60)
    synced = page.get("status", {}).get("synced") if isinstance(page, dict) else None
    _, listed = call("GET", f"{base}/infra/workers?selector=role%3Dedge&limit=1", admin, 60)
    revision = (
        (listed.get("workers") or [{}])[0].get("applied_revision")
        if isinstance(listed, dict)
        else None
    )

    print(
        f"group change (PUT, {selected} workers merged again in one transaction): "
        f"{put_took:.2f} s, {put_cpu:.2f} s of dashboard CPU; peak RSS {mb(rss.peak)}"
    )
    print(f"sweep after the change: {took:.2f} s, {n / took:.0f} syncs/s; outcomes {counts}")
    print(f"change to every selected worker at the new revision: {total:.2f} s")
    print(
        f"baseline sweep (nothing changed), same fleet: {baseline:.2f} s; "
        f"the change's sweep is {took / baseline:.2f}x it"
    )
    print(
        f"simulated fleet CPU: {change_fleet_cpu:.2f} s in the change's sweep, "
        f"{base_fleet_cpu:.2f} s in the baseline's (the load generator's share); "
        f"load average {load:.1f} on {os.cpu_count()} cores before the baseline"
    )
    print(
        f"checked: {right}/{selected} selected workers sent revision 2 with the merged config, "
        f"{strays} others sent a new revision; dashboard: {synced}/{selected} selected synced, "
        f"applied revision {revision}"
    )
    ok = right == selected and strays == 0 and synced == selected and counts.get("synced") == n
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
