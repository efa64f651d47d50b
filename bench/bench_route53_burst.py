"""Route53 burst benchmark: 1,000 records at once against a real moto_server.

Two ways in, both against `python -m moto.server` on a loopback port:

    python bench/bench_route53_burst.py                  # 1,000 concurrent ensure() calls
    python bench/bench_route53_burst.py --via dashboard  # 1,000 registrations through a real
                                                         # dashboard with --dns-backend route53

It prints the time until all records exist in the zone, how many failed (target 0) and how
many ChangeResourceRecordSets calls were made (target <= 20): counted by a botocore event hook
in-process, or by a counting HTTP proxy in front of moto_server for the dashboard. The backend
runs with its default settings (0.5 s window, 4 requests per second). Run on demand, not in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TARGET_SECONDS = 30.0
TARGET_CALLS = 20
ZONE = "burst.example.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} not ready after {timeout} s")


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/moto-api/")
    return proc, url


class CountingProxy(ThreadingHTTPServer):
    """Forwards every request to moto_server and counts the record changes."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.changes = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: CountingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and self.path.rstrip("/").endswith("/rrset"):
            with self.server.lock:
                self.server.changes += 1
        # http.client, not urllib: urllib would add a form Content-Type that moto misreads.
        host, port = self.server.upstream.rsplit("//", 1)[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "content-length", "connection")
        }
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        status, resp_headers, data = resp.status, resp.getheaders(), resp.read()
        conn.close()
        self.send_response(status)
        for key, value in resp_headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _forward


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }


def create_zone(endpoint: str) -> tuple[Any, str]:
    import boto3

    client = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
    resp = client.create_hosted_zone(Name=ZONE + ".", CallerReference=uuid.uuid4().hex)
    return client, str(resp["HostedZone"]["Id"]).rsplit("/", 1)[-1]


def a_records(client: Any, zone_id: str) -> int:
    pages = client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
    return sum(1 for p in pages for rs in p["ResourceRecordSets"] if rs["Type"] == "A")


def ip_of(i: int) -> str:
    """A distinct unicast address per worker (never .0 or .255)."""
    high, low = divmod(i, 250)
    return f"10.{high // 250}.{high % 250}.{low + 1}"


async def burst_backend(count: int, endpoint: str) -> tuple[float, int, int]:
    from vectis.dashboard.dns.route53 import Route53Backend

    client, zone_id = create_zone(endpoint)
    backend = Route53Backend(ZONE, zone_id)
    await backend.validate()
    names = [f"w{i:05d}.{ZONE}" for i in range(count)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(backend.ensure(n, ip_of(i)) for i, n in enumerate(names)), return_exceptions=True
    )
    elapsed = time.monotonic() - started
    failed = sum(1 for r in results if isinstance(r, BaseException))
    for r in results:
        if isinstance(r, BaseException):
            print(f"  failure: {r}", file=sys.stderr)
            break
    await backend.close()
    found = a_records(client, zone_id)
    if found != count - failed:
        print(f"  zone holds {found} A records, expected {count - failed}", file=sys.stderr)
    return elapsed, failed, backend.calls.get("ChangeResourceRecordSets", 0)


def burst_dashboard(count: int, endpoint: str, workdir: Path) -> tuple[float, int, int]:
    proxy = CountingProxy(endpoint)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    client, zone_id = create_zone(endpoint)
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        **aws_env(proxy.url),
        "VECTIS_DATA_DIR": str(workdir / "data"),
        "VECTIS_ADMIN_TOKEN": secrets.token_hex(16),
        "VECTIS_TOKEN": token,
        "VECTIS_SYNC_INTERVAL": "0",
        "VECTIS_WORKER_NETWORKS": "127.0.0.0/8",  # the simulated fleet
    }
    log = (workdir / "dashboard.log").open("wb")
    args = ["dashboard", "serve", "--port", str(port), "--zone", ZONE]
    args += ["--dns-backend", "route53", "--route53-zone-id", zone_id]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vectis", *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/healthz")

        def register(i: int) -> int:
            body = json.dumps({"ip": ip_of(i), "secret": secrets.token_hex(32), "port": 3000})
            req = urllib.request.Request(
                base + "/infra/workers/auto-register", data=body.encode(), method="POST"
            )
            req.add_header("Authorization", f"Bearer {token}")
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status
            except urllib.error.HTTPError as err:
                return err.code

        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(register, range(count)))
        refused = sum(1 for s in statuses if s != 201)
        deadline = started + 120
        while time.monotonic() < deadline and a_records(client, zone_id) < count - refused:
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        req = urllib.request.Request(base + "/infra/workers")
        req.add_header("Authorization", f"Bearer {env['VECTIS_ADMIN_TOKEN']}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            workers = json.loads(resp.read())["workers"]
        failed = refused + sum(1 for w in workers if w["dns_status"] != "synced")
        return elapsed, failed, proxy.changes
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        proxy.shutdown()
        if os.environ.get("BENCH_KEEP_LOG"):
            print((workdir / "dashboard.log").read_text()[-3000:], file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--via", choices=["backend", "dashboard"], default="backend")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        moto, endpoint = start_moto(Path(tmp) / "moto.log")
        try:
            os.environ.update(aws_env(endpoint))
            if opts.via == "backend":
                elapsed, failed, calls = asyncio.run(burst_backend(opts.records, endpoint))
            else:
                elapsed, failed, calls = burst_dashboard(opts.records, endpoint, Path(tmp))
        finally:
            moto.terminate()
            moto.wait(20)
    ok = elapsed <= TARGET_SECONDS and failed == 0 and calls <= TARGET_CALLS
    print(f"records:                   {opts.records} (via {opts.via})")
    print(f"time until all exist:      {elapsed:.2f} s (target <= {TARGET_SECONDS:.0f} s)")
    print(f"failed:                    {failed} (target 0)")
    print(f"ChangeResourceRecordSets:  {calls} (target <= {TARGET_CALLS})")
    print("result:                    " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
