"""Simulated workers' heartbeats: every member once an interval, spread evenly, signed.

Member i of n heartbeats at start + i * interval / n, then every `interval` seconds after,
the calls going round-robin over the dashboards' URLs (as a load balancer would spread them).
Each is signed with the member's secret, carries its address, port and the fleet's version,
and its answer must be a 200 whose signature verifies. The calls go over keep-alive
connections (a load balancer's upstream pool), opened as needed up to `connections` per URL;
a call that finds none free waits for one. A call's latency runs from the moment it was due,
so a dashboard (or a sender) that falls behind shows in it; the sender's own lag (due to
written) is reported apart, as is its CPU, so that it is never mistaken for the dashboard.

Public API, for bench_replicas.py and the like:

- `beat(urls, members, interval, seconds, connections=64) -> Beats`: run for `seconds` in this
  process's own event loop (give it a process of its own: `multiprocessing`).
- `Beats.latencies_in(start, end)`: the latencies (s) of heartbeats due in [start, end).
"""

from __future__ import annotations

import array
import asyncio
import collections
import os
import resource
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleet import VERSION, Member  # bench/ is the script's directory, so it is on sys.path

from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    AuthFailure,
    new_nonce,
    sign_request,
    verify_response,
)
from vectis.httpserver import KEEPALIVE_TIMEOUT

MAX_ANSWER = 64 * 1024
_SIG = SIGNATURE_HEADER.lower().encode()


@dataclass
class Beats:
    """What the sender saw: per heartbeat its due time and latency; failures by cause."""

    due: array.array[float] = field(default_factory=lambda: array.array("d"))
    latency: array.array[float] = field(default_factory=lambda: array.array("d"))
    lag: array.array[float] = field(default_factory=lambda: array.array("d"))
    sent: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    cpu_seconds: float = 0.0
    max_rss: int = 0
    connections: int = 0

    def latencies_in(self, start: float, end: float) -> list[float]:
        return [lat for d, lat in zip(self.due, self.latency, strict=True) if start <= d < end]


class _Call:
    __slots__ = ("auth", "body", "due", "key", "member", "nonce", "path")

    def __init__(self, m: Member, due: float) -> None:
        self.member = m
        self.due = due
        self.key = bytes.fromhex(m.secret)
        self.path = f"/infra/workers/{m.id}/heartbeat"
        self.body = b'{"ip":"%s","port":%d,"version":"%s"}' % (
            m.ip.encode(),
            m.port,
            VERSION.encode(),
        )
        self.nonce = new_nonce(os.urandom)
        self.auth = ""

    def request(self, host: bytes) -> bytes:
        self.auth = sign_request(
            self.key, self.member.id, "POST", self.path, self.body, ts=int(time.time()),
            nonce=self.nonce,
        )  # fmt: skip
        return (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (self.path.encode(), host, self.auth.encode(), len(self.body), self.body)
        )


#: Seconds a connection may stay idle before it is closed rather than used: half the
#: dashboard's keep-alive timeout.
IDLE_MAX = KEEPALIVE_TIMEOUT / 2


class _Upstream:
    """One dashboard URL: its idle connections and the calls waiting for one."""

    def __init__(self, url: str, limit: int, beats: Beats) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.host_header = f"{self.host}:{self.port}".encode()
        self.limit = limit
        self.beats = beats
        self.idle: list[_Conn] = []
        self.open = 0
        self.waiting: collections.deque[_Call] = collections.deque()
        self.connecting: set[asyncio.Future[None]] = set()

    def send(self, call: _Call) -> None:
        # A connection idle for half the dashboard's keep-alive timeout is closed rather than
        # used, as a load balancer's upstream pool should: used as the dashboard closes it,
        # the call would be lost on the way.
        stale = time.monotonic() - IDLE_MAX
        while self.idle and self.idle[0].idle_since < stale:
            old = self.idle.pop(0)
            assert old.transport is not None
            old.transport.close()
        if self.idle:
            self.idle.pop().send(call)
        elif self.open < self.limit:
            self.open += 1
            self.beats.connections = max(self.beats.connections, self.open)
            task = asyncio.ensure_future(self._connect(call))
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)
        else:
            self.waiting.append(call)

    async def _connect(self, call: _Call) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError as exc:
            self.open -= 1
            self.beats.failed[f"connect: {exc.strerror or type(exc).__name__}"] += 1
            return
        conn.send(call)

    def free(self, conn: _Conn) -> None:
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)


class _Conn(asyncio.Protocol):
    """One keep-alive connection: one call at a time, its answer read and verified."""

    def __init__(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.call: _Call | None = None
        self.buf = b""
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, call: _Call) -> None:
        assert self.transport is not None
        self.call = call
        beats = self.upstream.beats
        beats.lag.append(time.time() - call.due)
        self.transport.write(call.request(self.upstream.host_header))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_ANSWER:
                self._fail("answer head too large")
            return
        lines = self.buf[:end].split(b"\r\n")
        head = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            head[name.strip().lower()] = value.strip()
        try:
            status = int(lines[0].split(b" ")[1])
            length = int(head[b"content-length"])
        except (IndexError, KeyError, ValueError):
            self._fail("answer without status or Content-Length")
            return
        if len(self.buf) < end + 4 + length:
            return
        body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
        call, self.call = self.call, None
        if call is None:
            self._fail("an answer nobody asked for")
            return
        beats = self.upstream.beats
        if status != 200:
            beats.failed[f"http {status}"] += 1
        else:
            sig = head.get(_SIG, b"").decode("ascii", "replace")
            try:
                verify_response(call.key, call.member.id, call.nonce, 200, body, sig)
            except AuthFailure:
                beats.failed["bad signature"] += 1
            else:
                beats.due.append(call.due)
                beats.latency.append(time.time() - call.due)
        if head.get(b"connection", b"").lower() == b"close":
            assert self.transport is not None
            self.transport.close()
        else:
            self.upstream.free(self)

    def _fail(self, why: str) -> None:
        self.upstream.beats.failed[why] += 1
        self.call = None
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.call is not None:
            self.upstream.beats.failed["connection lost"] += 1
            self.call = None
        self.upstream.lost(self)


async def _run(
    urls: Sequence[str], members: Sequence[Member], interval: float, seconds: float, limit: int
) -> Beats:
    beats = Beats()
    upstreams = [_Upstream(u, limit, beats) for u in urls]
    n = len(members)
    step = interval / n
    start = time.time() + 0.2
    end = start + seconds
    j = 0
    while True:
        now = time.time()
        if now >= end:
            break
        while (due := start + j * step) <= now:
            upstreams[j % len(upstreams)].send(_Call(members[j % n], due))
            j += 1
        await asyncio.sleep(min(0.005, max(0.0, start + j * step - time.time())))
    beats.sent = j
    # The calls still out get a few seconds to land; what does not is counted as lost.
    deadline = time.time() + 10
    while time.time() < deadline and len(beats.latency) + sum(beats.failed.values()) < j:
        await asyncio.sleep(0.05)
    lost = j - len(beats.latency) - sum(beats.failed.values())
    if lost > 0:
        beats.failed["no answer 10 s after the end"] += lost
    return beats


def beat(
    urls: Sequence[str],
    members: Sequence[Member],
    interval: float,
    seconds: float,
    connections: int = 64,
) -> Beats:
    """Heartbeat every member once an `interval`, evenly spread, for `seconds`; the record."""
    beats = asyncio.run(_run(urls, members, interval, seconds, connections))
    used = resource.getrusage(resource.RUSAGE_SELF)
    beats.cpu_seconds = used.ru_utime + used.ru_stime
    beats.max_rss = used.ru_maxrss * 1024
    return beats
