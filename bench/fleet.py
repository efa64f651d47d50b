"""A simulated fleet: many workers answering signed `POST /sync` from one process per core.

Each member has its own secret and its own listening address on loopback (several
127.77.x.y addresses times a range of ports, so that every worker has a distinct IP:port
pair), verifies requests with `RequestVerifier` and answers the SPEC's JSON, signed, exactly
like `vectis worker serve`. A minimal HTTP/1.1 protocol keeps the simulator far cheaper than
the dashboard it measures.

    python bench/fleet.py --roster roster.json [--processes 2]

serves a roster of `{"id", "ip", "port", "secret"}` objects until SIGTERM; bench_sweep.py
uses `bind()` and `Fleet.start()` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import resource
import secrets
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    AuthFailure,
    NonceStoreFull,
    RequestVerifier,
    sign_response,
)

FIRST_PORT = 21000  # below Linux's ephemeral range, so the dashboard's own connects never clash
PORTS_PER_IP = 100
MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
VERSION = "0.0.0-fleet"


@dataclass(slots=True)
class Member:
    """One simulated worker: its address, secret and (once registered) id."""

    ip: str
    port: int
    secret: str
    id: str = ""
    applied_revision: int = 0


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def address(index: int) -> str:
    """The loopback address of the index-th group of PORTS_PER_IP members."""
    return f"127.77.{index // 250}.{index % 250 + 1}"


def _listen(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(count: int) -> tuple[list[Member], list[socket.socket]]:
    """Listen on `count` distinct loopback addresses, each with a fresh secret."""
    if count > 250 * 250 * PORTS_PER_IP:
        raise ValueError("too many members for the address plan")
    members: list[Member] = []
    socks: list[socket.socket] = []
    group = 0
    try:
        while len(members) < count:
            ip = address(group)
            on_ip = 0
            # Twice the ports needed, so a few ports held by others elsewhere do not matter.
            for port in range(FIRST_PORT, FIRST_PORT + 2 * PORTS_PER_IP):
                if on_ip == PORTS_PER_IP or len(members) == count:
                    break
                try:
                    sock = _listen(ip, port)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    continue
                socks.append(sock)
                members.append(Member(ip, port, secrets.token_hex(32)))
                on_ip += 1
            group += 1
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return members, socks


class _Shard:
    """The members one process serves, and their verifier."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.by_id = {m.id: m for m in members}
        self.keys = {m.id: bytes.fromhex(m.secret) for m in members}
        # One sweep of the whole fleet fits many times over; the store never has to refuse.
        self.verifier = RequestVerifier(
            self.keys.get, start_time=time.time(), nonce_capacity=1 << 20
        )
        self.served = 0

    def answer(self, local: tuple[str, int], head: dict[bytes, bytes], body: bytes) -> bytes:
        now = time.time()
        try:
            auth = head.get(b"authorization", b"").decode("ascii")
            req = self.verifier.verify(auth, "POST", "/sync", body, now=now)
        except (AuthFailure, UnicodeDecodeError):
            return _response(401, b'{"error":"unauthorized"}')
        except NonceStoreFull:
            return _response(503, b'{"error":"unavailable","message":"nonce store full"}')
        member = self.by_id[req.worker_id]
        if (member.ip, member.port) != local[:2]:
            # A worker answers only for itself, as a real one on its own address would.
            return _response(401, b'{"error":"unauthorized"}')
        try:
            desired = json.loads(body)
            revision = int(desired.get("revision", 0))
        except (ValueError, TypeError, AttributeError):
            return _response(400, b'{"error":"bad_request","message":"bad sync body"}')
        if revision > member.applied_revision:
            member.applied_revision = revision
        self.served += 1
        payload = json.dumps(
            {
                "status": "online",
                "version": VERSION,
                "worker_id": member.id,
                "applied_revision": member.applied_revision,
                "stats": {"cpu_percent": 1.5, "memory_percent": 12.0, "load1": 0.1},
                "metadata": {"hostname": f"fleet-{member.port}", "os": "Linux"},
            },
            separators=(",", ":"),
        ).encode()
        sig = sign_response(self.keys[member.id], member.id, req.nonce, 200, payload, ts=int(now))
        return _response(200, payload, {SIGNATURE_HEADER: sig})


_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}


def _response(status: int, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    lines.extend(f"{k}: {v}".encode("ascii") for k, v in (extra or {}).items())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Protocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: all a sync client sends."""

    def __init__(self, shard: _Shard) -> None:
        self.shard = shard
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.local = transport.get_extra_info("sockname")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._finish(_response(400, b'{"error":"bad_request"}'), close=True)
                return
            lines = self.buf[:end].split(b"\r\n")
            parts = lines[0].split(b" ")
            head: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                head[name.strip().lower()] = value.strip()
            try:
                length = int(head.get(b"content-length", b"0"))
            except ValueError:
                length = -1
            if len(parts) != 3 or length < 0 or length > MAX_BODY or b"transfer-encoding" in head:
                self._finish(_response(400, b'{"error":"bad_request"}'), close=True)
                return
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            close = head.get(b"connection", b"").lower() == b"close"
            if parts[0] == b"GET" and parts[1] == b"/healthz":
                self._finish(_response(200, b'{"status":"ok"}'), close)
            elif parts[0] != b"POST" or parts[1] != b"/sync":
                self._finish(_response(404, b'{"error":"not_found"}'), close)
            else:
                self._finish(self.shard.answer(self.local, head, body), close)

    def _finish(self, raw: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(raw)
        if close:
            self.transport.close()


def _serve_shard(members: Sequence[Member], socks: Sequence[socket.socket], ready: int) -> None:
    """A child's life: serve its sockets until SIGTERM."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        shard = _Shard(members)
        servers = [
            await loop.create_server(lambda: _Protocol(shard), sock=s, start_serving=True)
            for s in socks
        ]
        os.write(ready, b"1")
        os.close(ready)
        await stop.wait()
        for server in servers:
            server.close()

    asyncio.run(main())


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when its parent dies, so no simulator outlives a killed run."""
    import ctypes

    pr_set_pdeathsig = 1
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


class Fleet:
    """The forked processes serving the members; stop() ends them."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    @classmethod
    def start(
        cls, members: Sequence[Member], socks: Sequence[socket.socket], processes: int
    ) -> Fleet:
        """Fork `processes` children, each serving every processes-th member; wait until ready."""
        if any(not m.id for m in members):
            raise ValueError("every member needs its worker id before the fleet serves")
        read_end, write_end = os.pipe()
        pids = []
        for k in range(processes):
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                code = 0
                try:
                    _die_with_parent()
                    mine = [i for i in range(len(members)) if i % processes == k]
                    for i in range(len(socks)):
                        if i % processes != k:
                            socks[i].close()
                    _serve_shard([members[i] for i in mine], [socks[i] for i in mine], write_end)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(write_end)
        fleet = cls(pids)
        got = b""
        while len(got) < processes:
            chunk = os.read(read_end, processes)
            if not chunk:
                fleet.stop()
                raise RuntimeError("a fleet process died before it was ready")
            got += chunk
        os.close(read_end)
        for sock in socks:
            sock.close()
        return fleet

    def stop(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pids = []


async def _drive(members: Sequence[Member], concurrency: int) -> tuple[int, float]:
    """Sign and send one sync to every member, as a dashboard would; (verified, seconds)."""
    import aiohttp

    from vectis.crypto.signing import new_nonce, sign_request, verify_response

    limit = asyncio.Semaphore(concurrency)
    body = b'{"revision":1,"config":{}}'

    async def one(session: aiohttp.ClientSession, m: Member) -> bool:
        key = bytes.fromhex(m.secret)
        nonce = new_nonce(os.urandom)
        auth = sign_request(key, m.id, "POST", "/sync", body, ts=int(time.time()), nonce=nonce)
        async with (
            limit,
            session.post(
                f"http://{m.ip}:{m.port}/sync", data=body, headers={"Authorization": auth}
            ) as resp,
        ):
            raw = await resp.read()
            if resp.status != 200:
                return False
            try:
                verify_response(key, m.id, nonce, 200, raw, resp.headers.get(SIGNATURE_HEADER))
            except AuthFailure:
                return False
            return True

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(session, m) for m in members))
        return sum(results), time.perf_counter() - start


def selftest(count: int, processes: int, concurrency: int) -> int:
    """Measure the fleet alone: one signed sync per member from this process."""
    members, socks = bind(count)
    for i, m in enumerate(members):
        m.id = f"fleet-member-{i:04x}"
    fleet = Fleet.start(members, socks, processes)
    try:
        ok, seconds = asyncio.run(_drive(members, concurrency))
    finally:
        fleet.stop()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"fleet selftest: {ok}/{count} verified in {seconds:.2f} s, {count / seconds:.0f}/s; "
        f"fleet CPU {used.ru_utime + used.ru_stime:.2f} s "
        f"({(used.ru_utime + used.ru_stime) / count * 1e6:.0f} us per sync)"
    )
    return 0 if ok == count else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roster", help="JSON list of {id, ip, port, secret} to serve")
    parser.add_argument("--selftest", type=int, metavar="N", help="sync N members, timed")
    parser.add_argument("--concurrency", type=int, default=100, help="for --selftest")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    raise_nofile()
    if args.selftest:
        return selftest(args.selftest, args.processes, args.concurrency)
    if not args.roster:
        parser.error("give --roster FILE or --selftest N")
    with open(args.roster, encoding="utf-8") as f:
        members = [Member(m["ip"], int(m["port"]), m["secret"], m["id"]) for m in json.load(f)]
    socks = [_listen(m.ip, m.port) for m in members]
    fleet = Fleet.start(members, socks, args.processes)
    print(f"fleet: {len(members)} workers on {args.processes} process(es), ready", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
