"""The sweep's HTTP client against small raw servers on loopback: every framing, every failure."""

from __future__ import annotations

import asyncio
import gc
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from OpenSSL import SSL

from vectis.crypto.pinning import pin_of_pem
from vectis.dashboard import sync_http
from vectis.worker import tls as worker_tls


@asynccontextmanager
async def server(answer: bytes, *, close: bool = True, hold: bool = False) -> AsyncIterator[int]:
    """A server that reads one request and writes `answer` (then closes, or holds on)."""
    seen: list[bytes] = []
    handlers: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append((task, writer))
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(x.split(b":")[1])
            for x in head.split(b"\r\n")
            if x.lower().startswith(b"content-length")
        )
        seen.append(head + await reader.readexactly(length))
        if hold:
            await asyncio.sleep(30)
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(30)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        for task, writer in handlers:
            task.cancel()
            writer.close()
        await asyncio.gather(*(t for t, _ in handlers), return_exceptions=True)
        await srv.wait_closed()


async def call(port: int, timeout: float = 2, limit: int = 1024) -> sync_http.Answer:
    return await sync_http.post(
        "127.0.0.1",
        port,
        "/sync",
        {"Authorization": "x"},
        b'{"a": 1}',
        timeout=timeout,
        limit=limit,
    )


async def test_content_length_answer_without_waiting_for_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Vectis-Signature: v1.1.x\r\n\r\nhello"
    async with server(raw, close=False) as port:
        answer = await call(port)
    assert answer == sync_http.Answer(
        200, {"content-length": "5", "x-vectis-signature": "v1.1.x"}, b"hello"
    )


async def test_chunked_and_close_delimited_answers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n"
    )
    async with server(chunked, close=False) as port:
        assert (await call(port)).body == b"abcde"
    async with server(b"HTTP/1.0 503 Busy\r\n\r\nlater") as port:
        answer = await call(port)
    assert answer.status == 503 and answer.body == b"later"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 40000,
    ],
)
async def test_bad_answers_are_wire_errors(raw: bytes) -> None:
    async with server(raw) as port:
        with pytest.raises(sync_http.WireError):
            await call(port)


async def test_silence_times_out_and_refusal_is_oserror() -> None:
    async with server(b"", hold=True) as port:
        with pytest.raises(TimeoutError):
            await call(port, timeout=0.2)
    with pytest.raises(OSError):
        await call(port)  # nobody listens there any more


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class KeepAliveServer:
    """A server answering every request on a connection with `answer` until told otherwise:
    `drop_next` closes the connection that gets the next request, unanswered."""

    def __init__(self, answer: bytes = OK, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests = 0
        self.open = 0
        self.drop_next = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(x.split(b":")[1])
                    for x in head.split(b"\r\n")
                    if x.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                if self.drop_next:
                    self.drop_next = False
                    break
                self.requests += 1
                writer.write(self.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[KeepAliveServer]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()


async def kept_call(port: int, pool: sync_http.Connections) -> sync_http.Answer:
    return await sync_http.post(
        "127.0.0.1", port, "/sync", {"Authorization": "x"}, b"{}", timeout=2, limit=1024, pool=pool
    )


async def until(check: Callable[[], bool], timeout: float = 2) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_closed_connection_is_freed_without_the_collector() -> None:
    """A sync's connection, closed by the worker or by the pool, leaves no reference cycle:
    full collections are rare on a busy dashboard, and a sweep's worth of closed transports
    waiting for one held hundreds of megabytes."""
    gc.collect()
    gc.disable()
    try:
        async with server(OK) as port:
            for _ in range(3):
                assert (await call(port)).body == b"ok"
        pool = sync_http.Connections(capacity=10, idle=30)
        srv = KeepAliveServer()
        async with srv.running():
            assert (await kept_call(srv.port, pool)).body == b"ok"
            pool.close()
            await until(lambda: srv.open == 0)
        await asyncio.sleep(0.05)  # every connection_lost has run
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = {port, srv.port}
        left = [
            o
            for o in gc.garbage
            if isinstance(o, asyncio.Transport)
            and (o.get_extra_info("peername") or ("", 0))[1] in ours
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


async def test_kept_connections_carry_the_next_syncs_up_to_the_cap() -> None:
    pool = sync_http.Connections(capacity=1, idle=30)
    a, b = KeepAliveServer(), KeepAliveServer()
    async with a.running(), b.running():
        for _ in range(3):
            assert (await kept_call(a.port, pool)).body == b"ok"
        assert (a.connections, a.requests, pool.reused, len(pool)) == (1, 3, 2, 1)
        await kept_call(b.port, pool)  # the cap is 1: a's connection is closed for b's
        await until(lambda: a.open == 0)
        await kept_call(a.port, pool)
        assert (a.connections, b.connections, len(pool)) == (2, 1, 1)
        pool.close()
        await until(lambda: a.open == 0 and b.open == 0)
        assert len(pool) == 0


async def test_an_answer_that_closes_or_is_not_length_framed_is_not_kept() -> None:
    pool = sync_http.Connections(capacity=10, idle=30)
    for answer in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        OK + b"HTTP/1.1 200 OK\r\n",  # bytes past the answer
    ):
        srv = KeepAliveServer(answer)
        async with srv.running():
            assert (await kept_call(srv.port, pool)).body == b"ok"
            assert (await kept_call(srv.port, pool)).body == b"ok"
            assert srv.connections == 2, answer
            assert pool.reused == 0


async def test_a_kept_connection_closed_unanswered_is_retried_once_on_a_new_one() -> None:
    pool = sync_http.Connections(capacity=10, idle=30)
    srv = KeepAliveServer()
    async with srv.running():
        await kept_call(srv.port, pool)
        srv.drop_next = True
        assert (await kept_call(srv.port, pool)).body == b"ok"
        assert (srv.connections, srv.requests, pool.retried, pool.reused) == (2, 2, 1, 0)
        # A new connection closed unanswered is no kept one: a failure, not retried.
        pool.close()
        srv.drop_next = True
        with pytest.raises(sync_http.WireError):
            await kept_call(srv.port, pool)
        assert (srv.connections, pool.retried) == (3, 1)


async def test_connections_closed_while_idle_or_idle_too_long_are_dropped() -> None:
    pool = sync_http.Connections(capacity=10, idle=0.2)
    srv = KeepAliveServer()
    async with srv.running():
        await kept_call(srv.port, pool)
        assert len(pool) == 1
        await until(lambda: srv.open == 0)  # the pool closed it after its idle time
        assert len(pool) == 0
        await kept_call(srv.port, pool)
        assert srv.connections == 2 and pool.retried == 0
    # The server's end closed the last one while it was idle: it left the pool by itself.
    await until(lambda: len(pool) == 0)


async def test_a_connection_is_reused_for_its_lifetime_at_most() -> None:
    pool = sync_http.Connections(capacity=10, idle=30, lifetime=0.3)
    srv = KeepAliveServer()
    async with srv.running():
        await kept_call(srv.port, pool)
        await kept_call(srv.port, pool)
        assert srv.connections == 1
        await asyncio.sleep(0.4)  # never idle long, but made too long ago
        await kept_call(srv.port, pool)
        assert srv.connections == 2 and pool.reused == 1
        pool.close()


async def test_a_kept_tls_connection_is_reused_only_while_its_key_is_pinned(
    tmp_path: Path,
) -> None:
    worker_tls.create_tls_file(tmp_path / "key.pem")
    pin = pin_of_pem((tmp_path / "key.pem").read_bytes())
    other = "0" * 64
    srv = KeepAliveServer(tls=worker_tls.server_context(tmp_path / "key.pem"))
    context = sync_http.client_context()
    pool = sync_http.Connections(capacity=10, idle=30)

    async def tls_call(
        pins: frozenset[str], terms: sync_http.Pinned | None = None
    ) -> sync_http.Pinned:
        terms = terms or sync_http.Pinned(context, pins)
        answer = await sync_http.post(
            "127.0.0.1", srv.port, "/sync", {}, b"{}", timeout=2, limit=1024, tls=terms, pool=pool
        )
        assert answer.body == b"ok"
        return terms

    async with srv.running():
        first = await tls_call(frozenset((pin, other)))  # a rotation under way: two keys
        assert (first.kept, first.pin, srv.connections) == (False, pin, 1)
        again = await tls_call(frozenset((pin, other)))
        assert (again.kept, again.pin, srv.connections) == (True, pin, 1)
        # The rotation ended on the other key: the kept connection's key is no longer pinned,
        # so a new connection is made, and its handshake shows a key that is not accepted.
        last = sync_http.Pinned(context, frozenset((other,)))
        with pytest.raises(sync_http.TlsFailed):
            await tls_call(last.pins, last)
        assert (last.kept, last.pin, len(pool)) == (False, pin, 0)


async def test_keepalive_off_asks_the_worker_to_close() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.readexactly(2)
        writer.write(OK)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        off = sync_http.Connections(capacity=10, idle=0)
        assert (await kept_call(port, off)).body == b"ok"
        assert b"Connection: close" in seen[0]
        on = sync_http.Connections(capacity=10, idle=5)
        assert (await kept_call(port, on)).body == b"ok"
        assert b"Connection: close" not in seen[1]
        await until(lambda: len(on) == 0)  # the server closed it: it left the pool
    finally:
        srv.close()
        await srv.wait_closed()


def test_the_keepalive_settings_and_their_bounds(tmp_path: Path) -> None:
    from vectis.dashboard.settings import load_settings
    from vectis.errors import ConfigError

    env = {"VECTIS_DATA_DIR": str(tmp_path)}
    default = load_settings(env)
    assert (default.sync_keepalive, default.sync_keepalive_max) == (5.0, 1024)
    chosen = load_settings(
        {**env, "VECTIS_SYNC_KEEPALIVE": "0", "VECTIS_SYNC_KEEPALIVE_MAX": "20000"}
    )
    assert (chosen.sync_keepalive, chosen.sync_keepalive_max) == (0.0, 20000)
    for name, bad in (
        ("VECTIS_SYNC_KEEPALIVE", "-1"),
        ("VECTIS_SYNC_KEEPALIVE", "nan"),
        ("VECTIS_SYNC_KEEPALIVE", "3601"),
        ("VECTIS_SYNC_KEEPALIVE_MAX", "many"),
        ("VECTIS_SYNC_KEEPALIVE_MAX", "1000001"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_settings({**env, name: bad})


def test_kept_connections_take_at_most_half_the_open_files_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no open-files limit here")
    assert sync_http.fd_share(10) == min(10, soft // 2)
    assert sync_http.fd_share(10**9) == soft // 2


def _extensions(hello: bytes, skip: int) -> dict[int, bytes]:
    """The extensions of a TLS ClientHello record, by type; `skip`: bytes before its
    session id (record and handshake headers, version, random)."""
    pos = skip
    pos += 1 + hello[pos]  # legacy_session_id
    pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")  # cipher_suites
    pos += 1 + hello[pos]  # legacy_compression_methods
    end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
    pos += 2
    found = {}
    while pos < end:
        kind, size = int.from_bytes(hello[pos : pos + 2], "big"), hello[pos + 2 : pos + 4]
        length = int.from_bytes(size, "big")
        found[kind] = hello[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return found


def test_a_tls_sync_sends_one_key_share_of_x25519() -> None:
    """A key share costs the dashboard a key pair per handshake: one is sent, X25519, which
    every worker's OpenSSL has, and not OpenSSL 3.5's X25519MLKEM768 share besides."""
    client = SSL.Connection(sync_http.client_context(), None)
    client.set_connect_state()
    with pytest.raises(SSL.WantReadError):
        client.do_handshake()
    hello = client.bio_read(65536)
    assert hello[0] == 22 and hello[5] == 1, "not a ClientHello"
    shares = _extensions(hello, 5 + 4 + 2 + 32)[51]  # key_share (RFC 8446, 4.2.8)
    groups, pos = [], 2
    while pos < len(shares):
        groups.append(int.from_bytes(shares[pos : pos + 2], "big"))
        pos += 4 + int.from_bytes(shares[pos + 2 : pos + 4], "big")
    assert groups == [0x001D], [hex(g) for g in groups]  # x25519
