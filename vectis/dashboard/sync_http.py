"""A minimal HTTP/1.1 client for the one call a sweep makes thousands of times: `POST /sync`.

A general client's cookie and redirect machinery is pure cost here: this one writes the
request in one piece and reads the status, headers and a size-capped body. Measured on the
sweep benchmark it spends about a third of the CPU per sync of an aiohttp ClientSession.

A pinned worker is reached over TLS (docs/protocol.md#tls): no CA and no name is checked,
only that the peer's key is a pinned one, before the request is sent.

TLS runs on pyOpenSSL, over the OpenSSL that `cryptography` ships, rather than on the `ssl`
module: on this client side a handshake with memory BIOs took 0.23 to 0.25 ms of CPU against
0.35 to 0.37 for `ssl` on Debian 12's OpenSSL 3.0, and a resumed one 0.14 against 0.21.
CPython copies a TLS session through DER each time one is read or set (0.08 ms each:
OpenSSL parses the certificate again), where pyOpenSSL hands over the session itself.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from OpenSSL._util import lib as _openssl

from vectis.crypto.pinning import pin_of_der


class WireError(Exception):
    """The peer answered something that is not a usable HTTP/1.1 response."""


class AnswerTooLarge(WireError):
    """The answer is larger than the caller's limit: it was not read whole."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Exchange:
    """One answer being read: its status, headers and size-capped body, off the raw bytes.

    `conn` settles it; `reusable` says afterwards whether the connection may carry another
    request (HTTP/1.1, a length-delimited body read exactly, no `Connection: close`).
    """

    __slots__ = ("body_at", "buf", "chunked", "done", "head", "length", "limit", "reusable")

    def __init__(self, limit: int, done: asyncio.Future[Answer]) -> None:
        self.limit = limit
        self.done = done
        self.buf = bytearray()
        self.head: tuple[int, dict[str, str]] | None = None
        self.body_at = 0
        self.length: int | None = None
        self.chunked = False
        self.reusable = False

    def feed(self, data: bytes) -> Answer | None:
        """Take more bytes of the answer; the answer once whole. Raises WireError."""
        self.buf += data
        if len(self.buf) > self.limit + 16384:
            raise AnswerTooLarge("the answer is too large")
        if self.head is None and not self._parse_head():
            return None
        return self._complete(eof=False)

    def at_eof(self) -> Answer:
        """The answer when the peer closed the connection; raises WireError if incomplete."""
        if self.head is None:
            raise WireError("the connection closed before an HTTP answer")
        answer = self._complete(eof=True)
        if answer is None:
            raise WireError("the connection closed in the middle of the answer")
        return answer

    def _parse_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 16384:
                raise WireError("the answer's headers are too large")
            return False
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise WireError("not an HTTP/1.1 answer")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise WireError("a malformed header line")
            headers[name.strip().lower()] = value.strip()
        self.head = (int(parts[1]), headers)
        self.body_at = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.chunked = True
        elif "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit() or len(text) > 12:
                raise WireError("a malformed Content-Length")
            self.length = int(text)
            if self.length > self.limit:
                raise AnswerTooLarge("the answer is too large")
            self.reusable = (
                parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            )
        return True

    def _complete(self, eof: bool) -> Answer | None:
        assert self.head is not None
        status, headers = self.head
        body = self.buf[self.body_at :]
        if self.chunked:
            decoded = _dechunk(bytes(body))
            if decoded is None:
                return None
            return Answer(status, headers, decoded)
        if self.length is not None:
            if len(body) < self.length:
                return None
            if len(body) > self.length:
                self.reusable = False  # bytes past the answer: this stream is not understood
            return Answer(status, headers, bytes(body[: self.length]))
        if status in (204, 304) or 100 <= status < 200:
            return Answer(status, headers, b"")
        return Answer(status, headers, bytes(body)) if eof else None


def _dechunk(data: bytes) -> bytes | None:
    """The body of a complete chunked message, or None while more is needed."""
    out = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        size_text = data[pos:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise WireError("a malformed chunk size") from None
        if size == 0:
            return bytes(out)
        start = end + 2
        if len(data) < start + size + 2:
            return None
        out += data[start : start + size]
        pos = start + size + 2


class TlsFailed(WireError):
    """No TLS session with the pinned key: the handshake failed, or the peer's key is another."""


class _Stale(Exception):
    """A kept connection ended before a byte of the answer: the worker closed it while idle."""


#: Bytes asked of OpenSSL at a time: a TLS record's most (a read never returns more), where
#: pyOpenSSL allocates the whole size for every call.
_READ = 16384


#: The key exchanges offered, and a key share sent for the first. OpenSSL 3.5 and later also
#: offer X25519MLKEM768 by default and send a share of it, which costs the dashboard 0.06 ms
#: a handshake more and which a worker on OpenSSL 3.0 (Debian 12) cannot use.
GROUPS = b"X25519:P-256"


def client_context() -> SSL.Context:
    """The context of TLS syncs: no CA, no name; `Pinned` checks the peer's key instead.

    TLS 1.2 at least, 1.3 where the worker offers it. One context serves every sync.
    """
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)  # the pin below is the whole check, as no CA exists
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    # pyOpenSSL offers no call for this list: the binding's, on its context (private). A
    # binding without it leaves OpenSSL's defaults, which cost more and work as well
    # (tests/unit/test_sync_http.py reads the key shares sent).
    set_groups = getattr(_openssl, "SSL_CTX_set1_curves_list", None)
    if set_groups is not None:
        set_groups(ctx._context, GROUPS)
    return ctx


@dataclass(slots=True)
class Pinned:
    """A TLS sync's terms: the keys accepted (pins), and a session to resume, if any.

    After an exchange that succeeded `session` holds the session to resume next time, and
    `kept` tells whether it went over a kept connection (no handshake at all).
    A resumed session still names the certificate of its first handshake, whose key is
    checked like any other; a kept connection's key was checked when it was made, and is
    checked against `pins` again before each reuse.
    """

    context: SSL.Context
    pins: frozenset[str]
    session: SSL.Session | None = None
    pin: str | None = None  # the key the peer presented
    kept: bool = False


class _Conn(asyncio.Protocol):
    """One connection to a worker, plain or TLS, carrying one exchange at a time.

    TLS runs through memory BIOs: asyncio's own TLS transport cannot resume a session, and
    its pure-Python protocol layer costs more per sync. The handshake's last flight and the
    request leave in one write.

    OpenSSL makes a session unusable when a connection that has not been shut down is
    freed, so a connection whose last exchange succeeded is marked shut down when it is lost
    (without a close_notify, which the worker does not need): its session, and the kept one
    it shares, stay resumable; a failed one's do not.
    """

    def __init__(self, terms: Pinned | None) -> None:
        self.terms = terms
        self.kept = False  # taken from `Connections`: a close before any answer is _Stale
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.request = b""  # written once the TLS handshake is done
        self.pin: str | None = None
        self.closed = False
        self.pool: Connections | None = None  # while idle in a pool
        self.key: tuple[str, int] = ("", 0)
        self.idle_since = 0.0
        self.born = asyncio.get_running_loop().time()
        self.sslobj: SSL.Connection | None = None
        self.sound = False  # the last exchange succeeded: its session may be resumed
        self.open = terms is None
        if terms is not None:
            self.sslobj = SSL.Connection(terms.context, None)
            self.sslobj.set_connect_state()
            if terms.session is not None:
                self.sslobj.set_session(terms.session)

    def begin(self, request: bytes, limit: int) -> asyncio.Future[Answer]:
        """Send `request` (once connected and, over TLS, once the key is checked)."""
        done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.exchange = _Exchange(limit, done)
        self.sound = False
        if self.transport is None or not self.open:
            self.request = request
        elif self.sslobj is not None:
            try:
                self.sslobj.sendall(request)
            except SSL.Error as exc:  # the session ended while the connection was idle
                self._settle(_Stale() if self.kept else TlsFailed(f"TLS failed: {_reason(exc)}"))
                return done
            self._flush()
        else:
            self.transport.write(request)
        return done

    @property
    def reusable(self) -> bool:
        return not self.closed and self.exchange is None and self.open

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.sslobj is not None:
            self._step()
        elif self.request:
            transport.write(self.request)
            self.request = b""

    def _settle(self, result: Answer | Exception) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not exchange.done.done():
            if isinstance(result, Exception):
                exchange.done.set_exception(result)
            else:
                self.sound = True
                self._keep_session()
                exchange.done.set_result(result)
        if isinstance(result, Exception) or exchange is None or not exchange.reusable:
            self.close()

    def _keep_session(self) -> None:
        # The latest session: after a resumed handshake, the one with the worker's new ticket.
        terms = self.terms
        if terms is not None and self.sslobj is not None and not terms.kept:
            terms.session = self.sslobj.get_session()

    def _deliver(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # bytes nobody asked for: this connection is not understood
            return
        try:
            answer = exchange.feed(data)
        except WireError as exc:
            self._settle(exc)
            return
        if answer is not None:
            self._settle(answer)

    def _flush(self) -> None:
        sslobj = self.sslobj
        assert sslobj is not None
        data = b""
        try:
            data = sslobj.bio_read(_READ)
            while len(data) % _READ == 0:  # rarely: more than one read's worth waits
                data += sslobj.bio_read(_READ)
        except SSL.WantReadError:  # nothing (more) to send
            pass
        if data and self.transport is not None:
            self.transport.write(data)

    def _handshake(self, sslobj: SSL.Connection, terms: Pinned) -> bool:
        """Whether the handshake is done and the peer's key pinned; raises SSL.Error."""
        try:
            sslobj.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        cert = sslobj.get_peer_certificate(as_cryptography=True)
        try:
            self.pin = pin_of_der(cert.public_bytes(Encoding.DER)) if cert else None
        except ValueError:  # BadCertificate, or one that `cryptography` cannot read
            self.pin = None
        terms.pin = self.pin
        if self.pin not in terms.pins:
            self._settle(TlsFailed("the peer's TLS key is not the pinned one"))
            return False
        self.open = True
        if self.request:
            sslobj.sendall(self.request)
            self.request = b""
        self._flush()
        return True

    def _step(self) -> None:
        sslobj, terms = self.sslobj, self.terms
        assert sslobj is not None and terms is not None
        try:
            if not self.open and not self._handshake(sslobj, terms):
                return
            while not self.closed:
                try:
                    chunk = sslobj.recv(_READ)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    self.close()  # close_notify: connection_lost settles what was read
                    break
                if not chunk:
                    break
                self._deliver(chunk)
                if self.exchange is None:
                    # Answered: nothing more is read or sent now, as each call into pyOpenSSL
                    # gives up the interpreter lock (over kept connections, 0.15 ms a sync
                    # instead of 0.12). Bytes sent after the answer are read as the start of
                    # the next one, which they cannot sign: that sync fails, as it should.
                    return
            if not self.closed:
                self._flush()
        except SSL.Error as exc:
            self._settle(TlsFailed(f"TLS failed: {_reason(exc)}"))

    def data_received(self, data: bytes) -> None:
        if self.sslobj is not None:
            self.sslobj.bio_write(data)
            self._step()
        else:
            self._deliver(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost settles the result

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        _unlink(self.transport)
        if self.pool is not None:
            self.pool.discard(self)
        exchange = self.exchange
        if exchange is not None:
            if not self.open:
                self._settle(TlsFailed("the connection closed during the TLS handshake"))
            elif self.kept and not exchange.buf:
                self._settle(_Stale())
            else:
                try:
                    self._settle(exchange.at_eof())
                except WireError as err:
                    self._settle(err)
        if self.sslobj is not None and self.sound:
            self.sslobj.set_shutdown(SSL.SENT_SHUTDOWN)


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's reason for a failure, short (`SSL.Error` carries a list of error tuples)."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [e[2] for e in errors if isinstance(e, tuple) and len(e) == 3 and e[2]]
    return "; ".join(reasons) or type(exc).__name__


def _unlink(transport: asyncio.BaseTransport | None) -> None:
    """Let a closed connection's transport go as soon as nothing refers to it.

    CPython 3.11's selector transport holds a bound method of its own (`_read_ready_cb`): a
    reference cycle, so each closed connection (one a sync, past its kept time) was freed by
    the collector's full passes only. Those are rare on a busy dashboard (server.py,
    GC_THRESHOLDS): at 100,000 workers one dashboard's syncs left 99,396 of them in 100 s, its
    RSS at 727 MB, and replicas passed 400 MB in 3 intervals. Reading is over when the
    connection is lost, so the method is never called again.
    """
    held = getattr(transport, "__dict__", None)
    if held is not None and held.get("_read_ready_cb") is not None:
        held["_read_ready_cb"] = None


#: A kept connection idle this long is closed: below the worker's own idle limit (10 s,
#: vectis.httpserver.KEEPALIVE_TIMEOUT), so that the worker seldom closes one first.
DEFAULT_KEEP_IDLE = 5.0
#: Connections kept idle at most, whatever the fleet's size.
DEFAULT_KEEP_MAX = 1024
#: A connection is reused for this long after it was made, at most: a worker synced more
#: often than its idle time would otherwise keep one connection for ever, and a new TLS key
#: (a rotation's end, which a sync must see) would never be shown.
KEEP_LIFETIME = 60.0


def fd_share(wanted: int) -> int:
    """`wanted`, at most half of this process's open-files limit: idle connections never
    starve the API and the syncs under way of file descriptors."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if soft == resource.RLIM_INFINITY else max(0, min(wanted, soft // 2))


class Connections:
    """Idle connections to workers, kept for their next sync: at most one per address,
    `capacity` in all (the oldest closed first), each idle for `idle` seconds at most and
    reused for `lifetime` seconds after it was made.

    Used on one event loop (a sync loop). A worker that closes a kept connection while it
    is idle costs a retry on a new connection, never a failed sync. `siblings`, the pools of
    the other sync loops, count against the same `capacity`: past it this pool closes its own
    oldest, or does not keep the connection when it holds none (another loop's are not its
    to close); two loops giving at the same instant may pass it by one.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_KEEP_MAX,
        idle: float = DEFAULT_KEEP_IDLE,
        lifetime: float = KEEP_LIFETIME,
    ) -> None:
        self.capacity = capacity
        self.idle = idle
        self.lifetime = lifetime
        self._idle: OrderedDict[tuple[str, int], _Conn] = OrderedDict()
        self.siblings: tuple[Connections, ...] = ()
        self._timer: asyncio.TimerHandle | None = None
        self.reused = 0  # exchanges over a kept connection
        self.retried = 0  # kept connections the worker had closed: sent again on a new one

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, key: tuple[str, int], tls: Pinned | None) -> _Conn | None:
        """The idle connection to `key`, if it is alive, fresh and on these terms."""
        conn = self._idle.pop(key, None)
        if conn is None:
            return None
        conn.pool = None
        now = asyncio.get_running_loop().time()
        fresh = now - conn.idle_since < self.idle and now - conn.born < self.lifetime
        same = (tls is None) == (conn.sslobj is None) and (tls is None or conn.pin in tls.pins)
        if conn.closed or not fresh or not same:
            conn.close()
            return None
        conn.kept = True
        return conn

    def give(self, key: tuple[str, int], conn: _Conn) -> None:
        """Keep `conn` idle for the next sync of `key`, or close it if it cannot be kept."""
        if not conn.reusable or self.capacity <= 0 or self.idle <= 0:
            conn.close()
            return
        old = self._idle.pop(key, None)
        if old is not None:
            old.pool = None
            old.close()
        while self._idle and self._held() >= self.capacity:
            _, oldest = self._idle.popitem(last=False)
            oldest.pool = None
            oldest.close()
        if self._held() >= self.capacity:
            conn.close()  # the other loops hold the rest
            return
        loop = asyncio.get_running_loop()
        conn.pool, conn.key, conn.idle_since = self, key, loop.time()
        self._idle[key] = conn
        if self._timer is None:
            self._timer = loop.call_later(self.idle, self._expire)

    def _held(self) -> int:
        """Idle connections kept here and by the siblings (a length read: safe across threads)."""
        return len(self._idle) + sum(len(other._idle) for other in self.siblings)

    def discard(self, conn: _Conn) -> None:
        """Forget `conn`, closed while idle."""
        if self._idle.get(conn.key) is conn:
            del self._idle[conn.key]
        conn.pool = None

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            key, conn = next(iter(self._idle.items()))
            if now - conn.idle_since < self.idle:
                self._timer = loop.call_later(conn.idle_since + self.idle - now, self._expire)
                return
            del self._idle[key]
            conn.pool = None
            conn.close()

    def close(self) -> None:
        """Close every idle connection (on the loop that kept them)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._idle:
            _, conn = self._idle.popitem()
            conn.pool = None
            conn.close()


async def post(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    *,
    timeout: float,
    limit: int,
    tls: Pinned | None = None,
    pool: Connections | None = None,
) -> Answer:
    """POST `body`; raises TimeoutError, OSError or WireError.

    With `tls`, over TLS to a peer holding one of `tls.pins`' keys, else TlsFailed before
    a byte of the request is sent. With `pool`, over the connection kept for this address if
    there is one (sent again, once, on a new connection if the worker had closed it), and
    the connection is kept afterwards; without, over a new connection closed afterwards.
    The same signed bytes are sent again: the worker never read them, or its nonce check
    refuses them.
    """
    if pool is not None and (pool.capacity <= 0 or pool.idle <= 0):
        pool = None  # keep-alive off: the worker is told to close the connection
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = [f"POST {path} HTTP/1.1", f"Host: {authority}"]
    if pool is None:
        head.append("Connection: close")
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    key = (host, port)
    conn = pool.take(key, tls) if pool is not None else None
    done: asyncio.Future[Answer] | None = None
    try:
        async with asyncio.timeout(timeout):
            if conn is not None:
                assert pool is not None
                if tls is not None:
                    tls.pin, tls.kept = conn.pin, True
                done = conn.begin(request, limit)
                try:
                    answer = await done
                except _Stale:
                    pool.retried += 1
                    conn = None
                else:
                    pool.reused += 1
                    return answer
            fresh = _Conn(tls)
            conn = fresh
            if tls is not None:
                tls.kept = False
            done = fresh.begin(request, limit)
            await asyncio.get_running_loop().create_connection(lambda: fresh, host, port)
            return await done
    finally:
        if conn is not None:
            if pool is not None and done is not None and done.done() and not done.cancelled():
                pool.give(key, conn)  # closed instead unless the answer left it reusable
            else:
                conn.close()
        if done is not None and not done.done():
            done.cancel()
