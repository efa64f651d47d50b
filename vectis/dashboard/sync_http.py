"""A minimal HTTP/1.1 client for the one call a sweep makes thousands of times: `POST /sync`.

A sweep reaches each worker once over a fresh connection, so a general client's pooling,
cookie and redirect machinery is pure cost: this one writes the request in one piece, reads
the status, headers and a size-capped body, and closes. Measured on the sweep benchmark it
spends about a third of the CPU per sync of an aiohttp ClientSession.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


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


async def post(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    *,
    timeout: float,
    limit: int,
) -> Answer:
    """POST `body` over a fresh connection; raises TimeoutError, OSError or WireError."""
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
            transport, _ = await loop.create_connection(lambda: _Exchange(limit, done), host, port)
            assert isinstance(transport, asyncio.Transport)
            transport.write(request)
            return await done
    finally:
        if transport is not None:
            transport.close()
        if not done.done():
            done.cancel()
