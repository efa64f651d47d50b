"""A simulated fleet: any number of workers answering signed `POST /sync`, from a few sockets.

Each member has its own secret and its own loopback address (127.77.0.1, 127.77.0.2, ...,
127.176.249.250), all on a few ports. One listening socket per port is bound to the wildcard
address (and to the loopback device, where the kernel lets it), so it accepts connections made
to every 127.x.y.z on that port; the member a connection is for is the local address (and
port) it was made to (`transport.get_extra_info("sockname")`). So 100,000 members take a few
file descriptors, not 100,000. A connection to anything but loopback is closed unanswered.

Each request is verified with `RequestVerifier` and answered with the SPEC's JSON, signed,
exactly like `vectis worker serve`; a member answers only on its own address. A minimal
HTTP/1.1 `asyncio.Protocol` (no aiohttp) on uvloop's event loop keeps the simulator far
cheaper than the dashboard it measures: about 0.1 KB of state and one HMAC each way per sync;
0.04 to 0.07 ms of CPU a plain sync, 0.08 to 0.10 on asyncio's own loop (bench_sweep.py
prints the simulator's CPU per sync beside the dashboard's).

Public API (bench_sweep.py, bench_load.py, bench_replicas.py and config-group benchmarks use it;
keep it stable):

- `bind(count, sockets=DEFAULT_SOCKETS) -> (members, socks)`: `count` fresh members (`Member`:
  ip, port, secret; `id` empty) and the listening sockets that serve them. Register each member
  with the dashboard (ip, port, secret) and set `member.id` to the id it got.
- `Fleet.start(members, socks, processes, record=False) -> Fleet`: fork up to `processes`
  simulator processes (at most one per socket) serving the members; returns once they serve.
  `fleet.pids` are their pids (for CPU and RSS figures). `fleet.stop()` ends them.
- With `record=True`, every verified sync answered is kept as a `Sync(member, at, revision,
  config)`: the member's index in `members`, the simulator's wall-clock time (`time.time()`),
  the desired revision and `config_digest()` of the desired config it carried.
  `fleet.syncs()` returns them all, sorted by time, after `stop()`.
- `per_interval(syncs, count, start, interval, windows)`: per window of `interval` seconds
  from `start`, how many members were synced 0, 1 and 2+ times (`Window`).
- `raise_nofile()`: lift the soft open-files limit to the hard one.
- `tls_context(folder) -> (context, pin)`: one TLS key for the whole fleet (a worker's kind,
  made by `vectis.worker.tls.make_pem`) and its pin; `Fleet.start(..., tls=context)` serves
  every member over TLS with it (memory BIOs, as the dashboard's side: asyncio's own TLS
  layer costs the simulator more than the worker's OpenSSL work). Register each member with
  `tls_pin=pin`.
- `Fleet.start(..., keepalive=False)`: every answer says `Connection: close` and ends its
  connection (a client that wants keep-alive gets none).
- `fleet.counts()` after `stop()`: `Counts` (connections, TLS handshakes full and resumed,
  requests answered) summed over the processes.
- `address(index)`: the index-th member's loopback address.

    python bench/fleet.py --selftest 20000 [--processes 2]   # the simulator alone, timed
    python bench/fleet.py --roster roster.json               # serve {id, ip, port, secret}s
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import resource
import secrets
import signal
import socket
import ssl
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

from uvloop import new_event_loop as new_loop

from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    AuthFailure,
    NonceStoreFull,
    RequestVerifier,
    sign_response,
)

FIRST_PORT = 21000  # below Linux's ephemeral range, so the dashboard's own connects never clash
DEFAULT_SOCKETS = 4  # listening sockets, hence at most this many simulator processes
PER_SECOND_OCTET = 250 * 250
MAX_MEMBERS = 100 * PER_SECOND_OCTET  # 127.77.x.y up to 127.176.x.y
MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
BACKLOG = 4096
VERSION = "0.0.0-fleet"
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(slots=True)
class Member:
    """One simulated worker: its address, secret and (once registered) id."""

    ip: str
    port: int
    secret: str
    id: str = ""
    applied_revision: int = 0


class Sync(NamedTuple):
    """One verified sync a member answered (`Fleet.start(record=True)`)."""

    member: int  # index in the members list given to Fleet.start
    at: float  # the simulator's time.time() when it answered
    revision: int  # the desired revision the dashboard sent
    config: int  # config_digest() of the desired config it sent


class Counts(NamedTuple):
    """What the fleet's processes served (`Fleet.counts()`)."""

    connections: int = 0
    full: int = 0  # TLS handshakes that made a new session
    resumed: int = 0  # TLS handshakes that resumed one
    requests: int = 0


class Window(NamedTuple):
    """One interval's count of members by the number of syncs they got in it."""

    start: float
    none: int
    once: int
    more: int  # synced twice or more in one interval


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def address(index: int) -> str:
    """The index-th member's loopback address: 127.77.0.1, 127.77.0.2, ..."""
    if not 0 <= index < MAX_MEMBERS:
        raise ValueError(f"no address for member {index}: at most {MAX_MEMBERS}")
    second, rest = divmod(index, PER_SECOND_OCTET)
    return f"127.{77 + second}.{rest // 250}.{rest % 250 + 1}"


def config_digest(config: Any) -> int:
    """A 32-bit digest of a desired config, as recorded in `Sync.config`."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return zlib.crc32(canonical.encode())


def listen_wildcard(port: int) -> socket.socket:
    """A listening socket on 0.0.0.0:`port`, held to the loopback device when allowed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # needs privileges on older kernels
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        sock.bind(("0.0.0.0", port))  # connections to anything but loopback are closed
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(count: int, sockets: int = DEFAULT_SOCKETS) -> tuple[list[Member], list[socket.socket]]:
    """`count` members with fresh secrets, spread over `sockets` wildcard listening sockets."""
    if count > MAX_MEMBERS:
        raise ValueError(f"at most {MAX_MEMBERS} members")
    wanted = max(1, min(sockets, count))
    socks: list[socket.socket] = []
    try:
        # Ports others hold (another simulator, anything on some 127.x) are passed over.
        for port in range(FIRST_PORT, FIRST_PORT + 2000):
            if len(socks) == wanted:
                break
            try:
                socks.append(listen_wildcard(port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        if len(socks) < wanted:
            raise OSError(errno.EADDRINUSE, f"no {wanted} free ports from {FIRST_PORT}")
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    ports = [s.getsockname()[1] for s in socks]
    members = [
        Member(address(i), ports[i % len(ports)], secrets.token_hex(32)) for i in range(count)
    ]
    return members, socks


class _Shard:
    """The members one process serves, their verifier, and its record of syncs."""

    def __init__(self, members: Sequence[Member], mine: Iterable[int], record: bool) -> None:
        self.members = members
        self.index = {members[i].id: i for i in mine}
        keys = {m: bytes.fromhex(members[i].secret) for m, i in self.index.items()}
        self.keys = keys
        # A whole fleet's syncs within the nonce lifetime fit many times over: never refused.
        self.verifier = RequestVerifier(keys.get, start_time=time.time(), nonce_capacity=1 << 21)
        self.record = record
        self.keepalive = True
        self.counts = [0, 0, 0, 0]  # as Counts
        self.who = array.array("I")
        self.when = array.array("d")
        self.revisions = array.array("q")
        self.configs = array.array("I")

    def answer(self, local: tuple[str, int], head: dict[bytes, bytes], body: bytes) -> bytes:
        now = time.time()
        try:
            auth = head.get(b"authorization", b"").decode("ascii")
            req = self.verifier.verify(auth, "POST", "/sync", body, now=now)
        except (AuthFailure, UnicodeDecodeError):
            return _response(401, b'{"error":"unauthorized"}')
        except NonceStoreFull:
            return _response(503, b'{"error":"unavailable","message":"nonce store full"}')
        index = self.index[req.worker_id]
        member = self.members[index]
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
        if self.record:
            self.who.append(index)
            self.when.append(now)
            self.revisions.append(revision)
            self.configs.append(config_digest(desired.get("config")))
        payload = (
            b'{"status":"online","version":"%s","worker_id":"%s","applied_revision":%d,'
            b'"stats":{"cpu_percent":1.5,"memory_percent":12.0,"load1":0.1},'
            b'"metadata":{"hostname":"fleet-%d","os":"Linux"}}'
            % (VERSION.encode(), member.id.encode(), member.applied_revision, index)
        )
        sig = sign_response(self.keys[member.id], member.id, req.nonce, 200, payload, ts=int(now))
        return _response(200, payload, (SIGNATURE_HEADER, sig))

    def dump_counts(self, path: Path) -> None:
        path.write_text(json.dumps(self.counts))

    def dump(self, path: Path) -> None:
        with path.open("wb") as f:
            f.write(len(self.who).to_bytes(8, "little"))
            for column in (self.who, self.when, self.revisions, self.configs):
                column.tofile(f)


def _load(path: Path) -> list[Sync]:
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        columns = []
        for code in "Idq" + "I":
            column = array.array(code)
            column.fromfile(f, n)
            columns.append(column)
    return [Sync(*row) for row in zip(*columns, strict=True)]


_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}


def _response(status: int, body: bytes, extra: tuple[str, str] | None = None) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        _REASONS.get(status, b"Error"),
        len(body),
    )
    if extra is not None:
        head += f"{extra[0]}: {extra[1]}\r\n".encode("ascii")
    return head + b"\r\n" + body


class _Protocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: all a sync client sends."""

    __slots__ = ("buf", "local", "shard", "transport")

    def __init__(self, shard: _Shard) -> None:
        self.shard = shard
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.local = transport.get_extra_info("sockname")
        if ipaddress.ip_address(self.local[0]) not in _LOOPBACK:
            transport.abort()  # the wildcard socket serves loopback only
            return
        self.transport = transport
        self.shard.counts[0] += 1

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
            close = head.get(b"connection", b"").lower() == b"close" or not self.shard.keepalive
            self.shard.counts[3] += 1
            if parts[0] == b"GET" and parts[1] == b"/healthz":
                self._finish(_response(200, b'{"status":"ok"}'), close)
            elif parts[0] != b"POST" or parts[1] != b"/sync":
                self._finish(_response(404, b'{"error":"not_found"}'), close)
            else:
                self._finish(self.shard.answer(self.local, head, body), close)

    def _finish(self, raw: bytes, close: bool) -> None:
        assert self.transport is not None
        if close:
            end = raw.index(b"\r\n")
            raw = raw[: end + 2] + b"Connection: close\r\n" + raw[end + 2 :]
        self.transport.write(raw)
        if close:
            self.transport.close()


class _TlsSide(asyncio.Transport):
    """The transport `_Protocol` sees over TLS: what it writes is encrypted."""

    def __init__(self, outer: _TlsProtocol) -> None:
        super().__init__()
        self.outer = outer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.outer.sslobj.write(data)
        self.outer.flush()

    def close(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self.outer.sslobj.unwrap()  # close_notify
        self.outer.flush()
        self.outer.transport.close()

    def abort(self) -> None:
        self.outer.transport.abort()

    def is_closing(self) -> bool:
        return self.outer.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.outer.transport.get_extra_info(name, default)


class _TlsProtocol(asyncio.Protocol):
    """TLS through memory BIOs beneath a `_Protocol`, as the dashboard's side does it."""

    def __init__(self, shard: _Shard, context: ssl.SSLContext) -> None:
        self.shard = shard
        self.inner = _Protocol(shard)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.transport: asyncio.Transport
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.inner.connection_made(_TlsSide(self))

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        try:
            if not self.open:
                try:
                    self.sslobj.do_handshake()
                except ssl.SSLWantReadError:
                    self.flush()
                    return
                self.open = True
                self.shard.counts[2 if self.sslobj.session_reused else 1] += 1
            while not self.transport.is_closing():
                try:
                    chunk = self.sslobj.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not chunk:
                    break
                self.inner.data_received(chunk)
            self.flush()
        except ssl.SSLError:
            self.transport.abort()


def tls_context(folder: Path) -> tuple[ssl.SSLContext, str]:
    """A server context with one new worker key for every member, and that key's pin."""
    from vectis.worker import tls

    path = folder / "fleet.tls.pem"
    tls.create_tls_file(path)
    pin = tls.read_pin(path)
    assert pin is not None
    return tls.server_context(path), pin


def _serve_shard(
    shard: _Shard,
    socks: Sequence[socket.socket],
    ready: int,
    out: Path,
    tls: ssl.SSLContext | None = None,
) -> None:
    """A child's life: serve its sockets until SIGTERM, then write its record to `out`."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        factory: Any = (lambda: _TlsProtocol(shard, tls)) if tls else (lambda: _Protocol(shard))
        servers = [
            await loop.create_server(factory, sock=s, start_serving=True, backlog=BACKLOG)
            for s in socks
        ]
        os.write(ready, b"1")
        os.close(ready)
        await stop.wait()
        for server in servers:
            server.close()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())
    shard.dump_counts(out.with_suffix(".counts"))
    if shard.record:
        shard.dump(out)


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

    def __init__(self, pids: list[int], records: Path, record: bool) -> None:
        self.pids = pids
        self._records = records
        self._record = record
        self._syncs: list[Sync] | None = None
        self._counts: Counts | None = None

    @classmethod
    def start(
        cls,
        members: Sequence[Member],
        socks: Sequence[socket.socket],
        processes: int,
        record: bool = False,
        tls: ssl.SSLContext | None = None,
        keepalive: bool = True,
    ) -> Fleet:
        """Fork up to `processes` children (one per socket at most), each serving the members
        on its sockets; return once all serve. The sockets are closed in this process."""
        if any(not m.id for m in members):
            raise ValueError("every member needs its worker id before the fleet serves")
        processes = max(1, min(processes, len(socks)))
        records = Path(tempfile.mkdtemp(prefix="vectis-fleet-"))
        port_of = [s.getsockname()[1] for s in socks]
        read_end, write_end = os.pipe()
        pids = []
        for k in range(processes):
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                code = 0
                try:
                    _die_with_parent()
                    own = [s for j, s in enumerate(socks) if j % processes == k]
                    for j, s in enumerate(socks):
                        if j % processes != k:
                            s.close()
                    ports = {port_of[j] for j in range(len(socks)) if j % processes == k}
                    mine = (i for i, m in enumerate(members) if m.port in ports)
                    shard = _Shard(members, mine, record)
                    shard.keepalive = keepalive
                    out = records / f"{k}.rec"
                    _serve_shard(shard, own, write_end, out, tls)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(write_end)
        fleet = cls(pids, records, record)
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
        if self._counts is None:
            totals = [0, 0, 0, 0]
            for path in self._records.glob("*.counts"):
                totals = [a + b for a, b in zip(totals, json.loads(path.read_text()), strict=True)]
            self._counts = Counts(*totals)
            found = sorted(self._records.glob("*.rec"))
            if self._record:
                self._syncs = sorted((s for p in found for s in _load(p)), key=lambda s: s.at)
            for path in [*found, *self._records.glob("*.counts")]:
                path.unlink()
            self._records.rmdir()

    def counts(self) -> Counts:
        """What the processes served, summed; after stop()."""
        if self._counts is None:
            raise RuntimeError("read the fleet's counts after stop()")
        return self._counts

    def syncs(self) -> list[Sync]:
        """Every verified sync answered, by time; after stop(), with record=True."""
        if self._syncs is None:
            raise RuntimeError("the fleet keeps a record only with record=True, read after stop()")
        return self._syncs


def per_interval(
    syncs: Iterable[Sync], count: int, start: float, interval: float, windows: int
) -> list[Window]:
    """For each of `windows` intervals from `start`: members synced 0, 1 and 2+ times in it."""
    got = [bytearray(count) for _ in range(windows)]
    for s in syncs:
        k = int((s.at - start) // interval)
        if 0 <= k < windows and got[k][s.member] < 255:
            got[k][s.member] += 1
    out = []
    for k, seen in enumerate(got):
        none = seen.count(0)
        once = seen.count(1)
        out.append(Window(start + k * interval, none, once, count - none - once))
    return out


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
    members, socks = bind(count, max(processes, 1))
    for i, m in enumerate(members):
        m.id = f"fleet-member-{i:05x}"
    fleet = Fleet.start(members, socks, processes, record=True)
    try:
        ok, seconds = asyncio.run(_drive(members, concurrency))
    finally:
        fleet.stop()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = used.ru_utime + used.ru_stime
    recorded = {s.member for s in fleet.syncs()}
    print(
        f"fleet selftest: {ok}/{count} verified in {seconds:.2f} s, {count / seconds:.0f}/s "
        f"(the aiohttp client here is the limit); {len(recorded)} members recorded; fleet CPU "
        f"{cpu:.2f} s ({cpu / count * 1e6:.0f} us per sync: a ceiling of "
        f"{count / cpu:.0f} syncs/s per core); peak RSS of a fleet process "
        f"{used.ru_maxrss / 1024:.0f} MB"
    )
    return 0 if ok == count == len(recorded) else 1


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
    ports = sorted({m.port for m in members})
    fleet = Fleet.start(members, [listen_wildcard(p) for p in ports], args.processes)
    print(f"fleet: {len(members)} workers on {len(fleet.pids)} process(es), ready", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
