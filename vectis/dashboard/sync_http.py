"""A minimal HTTP/1.1 client for the one call a sweep makes thousands of times: `POST /sync`.

A sweep reaches each worker once over a fresh connection, so a general client's pooling,
cookie and redirect machinery is pure cost: this one writes the request in one piece, reads
the status, headers and a size-capped body, and closes. Measured on the sweep benchmark it
spends about a third of the CPU per sync of an aiohttp ClientSession.

A pinned worker is reached over TLS (docs/protocol.md#tls): no CA and no name is checked,
only that the peer's key is a pinned one, before the request is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from vectis.crypto.pinning import BadCertificate, pin_of_der


class WireError(Exception):
    """The peer answered something that is not a usable HTTP/1.1 response."""


class AnswerTooLarge(WireError):
    """The answer is larger than the caller's limit: it was not read whole."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Exchange(asyncio.Protocol):
    def __init__(self, limit: int, done: asyncio.Future[Answer]) -> None:
        self.limit = limit
        self.done = done
        self.buf = bytearray()
        self.head: tuple[int, dict[str, str]] | None = None
        self.body_at = 0
        self.length: int | None = None
        self.chunked = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def _finish(self, result: Answer | Exception) -> None:
        if not self.done.done():
            if isinstance(result, Exception):
                self.done.set_exception(result)
            else:
                self.done.set_result(result)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > self.limit + 16384:
            self._finish(AnswerTooLarge("the answer is too large"))
            return
        try:
            if self.head is None and not self._parse_head():
                return
            answer = self._complete(eof=False)
        except WireError as exc:
            self._finish(exc)
            return
        if answer is not None:
            self._finish(answer)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost settles the result

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        try:
            if self.head is None:
                raise WireError("the connection closed before an HTTP answer")
            answer = self._complete(eof=True)
            if answer is None:
                raise WireError("the connection closed in the middle of the answer")
        except WireError as err:
            self._finish(err)
            return
        self._finish(answer)

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


def client_context() -> ssl.SSLContext:
    """The context of TLS syncs: no CA, no name; `Pinned` checks the peer's key instead.

    TLS 1.2 at least, 1.3 where the worker offers it. One context serves every sync.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the pin below is the whole check, as no CA exists
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(slots=True)
class Pinned:
    """A TLS sync's terms: the keys accepted (pins), and a session to resume, if any.

    After the exchange `session` holds the session to resume next time and `reused` whether
    this one resumed. A resumed session still names the certificate of its first handshake,
    whose key is checked like any other.
    """

    context: ssl.SSLContext
    pins: frozenset[str]
    session: ssl.SSLSession | None = None
    reused: bool = False
    pin: str | None = None  # the key the peer presented


class _Tls(asyncio.Protocol):
    """TLS through memory BIOs beneath an `_Exchange`: handshake, check the pin, then HTTP.

    asyncio's own TLS transport cannot resume a session; this can, and costs less per sync.
    """

    def __init__(self, inner: _Exchange, terms: Pinned, request: bytes) -> None:
        self.inner = inner
        self.terms = terms
        self.request = request
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = terms.context.wrap_bio(
            self.incoming, self.outgoing, server_side=False, session=terms.session
        )
        self.transport: asyncio.Transport | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = self.inner.transport = transport
        self._step()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None:
            self.transport.write(data)

    def _step(self) -> None:
        try:
            if not self.open:
                try:
                    self.sslobj.do_handshake()
                except ssl.SSLWantReadError:
                    self._flush()
                    return
                self._flush()
                der = self.sslobj.getpeercert(binary_form=True)
                try:
                    pin = pin_of_der(der) if der else None
                except BadCertificate:
                    pin = None
                self.terms.pin = pin
                self.terms.reused = self.sslobj.session_reused
                if pin not in self.terms.pins:
                    self.inner._finish(TlsFailed("the peer's TLS key is not the pinned one"))
                    return
                self.open = True
                self.sslobj.write(self.request)
                self._flush()
            while True:
                try:
                    chunk = self.sslobj.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    break  # close_notify: connection_lost settles what was read
                if not chunk:
                    break
                self.inner.data_received(chunk)
            self._flush()
        except ssl.SSLError as exc:
            self.inner._finish(TlsFailed(f"TLS failed: {exc.reason or exc}"))
            return
        if self.inner.done.done():
            with contextlib.suppress(ssl.SSLError, ValueError):
                self.terms.session = self.sslobj.session

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        self._step()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open and not self.inner.done.done():
            self.inner._finish(TlsFailed("the connection closed during the TLS handshake"))
            return
        self.inner.connection_lost(exc)


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
) -> Answer:
    """POST `body` over a fresh connection; raises TimeoutError, OSError or WireError.

    With `tls`, over TLS to a peer holding one of `tls.pins`' keys, else TlsFailed before
    a byte of the request is sent.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Answer] = loop.create_future()
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = [f"POST {path} HTTP/1.1", f"Host: {authority}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            if tls is not None:
                terms = tls
                transport, _ = await loop.create_connection(
                    lambda: _Tls(_Exchange(limit, done), terms, request), host, port
                )
                return await done
            transport, _ = await loop.create_connection(lambda: _Exchange(limit, done), host, port)
            assert isinstance(transport, asyncio.Transport)
            transport.write(request)
            return await done
    finally:
        if transport is not None:
            transport.close()
        if not done.done():
            done.cancel()
