"""The daemons' shared HTTP server parts, against raw connections on loopback."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from vectis import httpserver

GARBAGE = b"P\x00ST /x HTTP/1.1\r\n" + b"x" * 200_000


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    runner = httpserver.Runner(app, **httpserver.runner_options())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        assert site._server is not None
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""


async def test_refused_bytes_are_freed_without_the_collector() -> None:
    """A request the parser refuses, answered or cut off, leaves no reference cycle behind:
    each held the bytes of a read (up to 256 KiB) until the collector's next pass, which
    comes rarely on a busy dashboard, so a stream of garbage raised its memory by megabytes."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/hold", hold)
    gc.collect()
    gc.disable()
    try:
        async with serving(app) as port:
            # Answered: the parser's error becomes a 400.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(GARBAGE)
            answer = await _read_all(reader)
            writer.close()
            assert answer.split(b" ", 2)[1] == b"400", answer[:80]
            assert b'"error":"bad_request"' in answer
            # Never answered: the garbage waits behind a request in progress when the
            # connection closes.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(entered.wait(), 5)
            writer.write(GARBAGE)
            await asyncio.sleep(0.05)  # the garbage has reached the parser
            writer.close()
            await asyncio.sleep(0.05)  # connection_lost has run
            release.set()
            await asyncio.sleep(0.05)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, HttpProcessingError)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == [], f"{len(left)} parser errors were freed only by the collector"
