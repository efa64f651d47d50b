"""The sweep's HTTP client against small raw servers on loopback: every framing, every failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from vectis.dashboard import sync_http


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
