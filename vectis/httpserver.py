"""What both daemons' aiohttp servers share: timeouts, capped body reads, quiet parser errors.

aiohttp's defaults suit a trusted network, not a port on the internet: an idle connection is
kept for an hour, a body is read for as long as the client dribbles it, bytes that are not
HTTP are logged verbatim with a traceback and echoed back in the 400 answer, an oversized
body announced with `Expect: 100-continue` is invited with `100 Continue`, the access log
keeps query strings, and every answer names the server's software.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from aiohttp.abc import AbstractAccessLogger, AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from vectis.errors import PayloadTooLarge, VectisError

#: A connection idle this long (or one that has not sent whole headers) is closed.
KEEPALIVE_TIMEOUT = 10.0
#: A body not received whole within this time is refused.
BODY_TIMEOUT = 10.0
#: After refusing a body, how long the rest of it is drained so the client can read the answer.
LINGERING_TIME = 2.0


class RequestTimeout(VectisError):
    http_status = 408
    code = "timeout"


def runner_options() -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner` of either daemon."""
    return {"keepalive_timeout": KEEPALIVE_TIMEOUT, "lingering_time": LINGERING_TIME}


def printable(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, control and non-ASCII characters escaped, for a log."""
    return ascii(text[:limit])[1:-1]


def logged_path(request: web.BaseRequest) -> str:
    """The request's path for a log line: never its query string, which may carry a secret."""
    path = printable(request.rel_url.raw_path)
    return path + "?..." if request.rel_url.raw_query_string else path


#: Set on a response whose request is counted and logged elsewhere (failed credentials):
#: a guesser must not cost one access log line per guess.
NOT_LOGGED = "vectis.not_logged"


class AccessLog(AbstractAccessLogger):
    """One line per answer: client, method, path without the query, status, size, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.get(NOT_LOGGED):
            return
        self.logger.info(
            '%s "%s %s" %d %d %.3fs',
            request.remote,
            printable(request.method, 20),
            logged_path(request),
            response.status,
            response.body_length,
            time,
        )


class BareResponse(web.Response):
    """An answer that names no software, even where no `on_response_prepare` hook runs."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.pop("Server", None)


class WholeAnswer(web.StreamResponse):
    """A small answer to a POST, its few headers fixed, written with its body in one piece.

    `web.Response` fills a header multidict and prepares it through half a dozen coroutines,
    about a tenth of a busy worker `/sync` (issue 16); this writes the same bytes directly:
    the given headers, Content-Length, Date, and Connection where HTTP/1.0 or 1.1 needs it
    (aiohttp's own rule). Like `BareResponse`, it names no software.
    """

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(status=status)
        self._whole = body
        self._fixed = headers

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        writer = self._payload_writer = request._payload_writer
        self._req = request
        keep_alive = request.keep_alive if self._keep_alive is None else self._keep_alive
        self._keep_alive = keep_alive
        headers = self._fixed
        headers[hdrs.CONTENT_LENGTH] = str(len(self._whole))
        headers[hdrs.DATE] = rfc822_formatted_time()
        version = request.version
        if keep_alive and version == HttpVersion10:
            headers[hdrs.CONNECTION] = "keep-alive"
        elif not keep_alive and version == HttpVersion11:
            headers[hdrs.CONNECTION] = "close"
        writer.length = len(self._whole)
        status_line = f"HTTP/{version.major}.{version.minor} {self.status} {self.reason}"
        # The writer serializes any str mapping; it is typed for the multidict it is usually given.
        await writer.write_headers(status_line, cast("CIMultiDict[str]", headers))
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        writer = self._payload_writer
        assert writer is not None and not data, "prepare first; the body is the one given"
        await writer.write_eof(self._whole)  # the headers go out with it, in one write
        self._eof_sent = True
        self._req = None
        self._body_length = len(self._whole)
        self._payload_writer = None


def bare(resp: web.StreamResponse) -> web.StreamResponse:
    """`resp` as `harden`'s hook leaves it, for a fast path that runs no hook."""
    if not isinstance(resp, BareResponse):
        if not isinstance(resp, web.Response):
            raise TypeError("a fast path answers with whole responses only")
        resp = _bare_copy(resp)
    if resp.status in (408, 413):
        resp.force_close()
    return resp


def _bare_copy(resp: web.Response) -> BareResponse:
    copy = BareResponse(status=resp.status, body=resp.body, headers=resp.headers)
    for key, value in resp.items():
        copy[key] = value
    return copy


#: Requests answered ahead of the application's router: the fast path returns the answer's
#: awaitable, or None to leave the request to the router (`Runner`).
FastPath = Callable[[web.BaseRequest], Awaitable[web.StreamResponse] | None]
FAST_PATH: web.AppKey[FastPath] = web.AppKey("fast_path")


def _untrace(exc: BaseException | None) -> None:
    """Drop the traceback of a parser error that has been answered or will never be.

    aiohttp's `data_received` keeps the error in a local that outlives the `except`, and the
    error's traceback holds that frame: a cycle that held the bytes of the read (up to
    256 KiB) per refused connection until the collector's next pass.
    """
    if exc is not None:
        exc.__traceback__ = None


class _QuietRequestHandler(web.RequestHandler):
    """Answers what aiohttp's parser refuses with a fixed JSON body.

    aiohttp answers unparsable requests itself, before any application code runs
    (aio-libs/aiohttp#6463, #3287): the answer echoes the offending bytes and carries
    `Server: Python/... aiohttp/...`. `handle_error` is the one place every such answer is made.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, None)  # logs (shortened by the filter)
        _untrace(exc)  # the log line above was its last use
        code = "bad_request" if status == 400 else "internal" if status == 500 else "error"
        resp = BareResponse(
            status=status,
            body=b'{"error":"%s","message":"the request could not be parsed"}' % code.encode()
            if status < 500
            else b'{"error":"internal","message":"internal error"}',
            content_type="application/json",
        )
        resp.force_close()
        return resp

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        # A parser error that the closed connection never answered stays queued (aiohttp 3.x
        # keeps the queue in `_messages`).
        for message, _ in self._messages:
            _untrace(getattr(message, "exc", None))
        self._messages.clear()


class _QuietServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """`web.AppRunner` whose connections answer parser errors with `_QuietRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server itself and offers no protocol class option: switch the
        # class of the one it built, which adds only the protocol factory above.
        server.__class__ = _QuietServer
        app = self.app
        fast = app.get(FAST_PATH) if isinstance(app, web.Application) else None
        if fast is not None:
            routed = server.request_handler

            async def handle(request: web.BaseRequest) -> web.StreamResponse:
                answer = fast(request)
                return await (routed(request) if answer is None else answer)

            server.request_handler = handle
        return server


def expect_within(cap_of: Callable[[web.Request], int]) -> Callable[..., Any]:
    """An `expect_handler` that refuses an announced body over the cap with 413, no 100.

    aiohttp's default answers `100 Continue` to any `Expect: 100-continue`, inviting a client
    to send a body that the handler then refuses anyway.
    """

    async def expect(request: web.Request) -> web.StreamResponse | None:
        cap = cap_of(request)
        if request.content_length is not None and request.content_length > cap:
            resp = web.json_response(
                PayloadTooLarge(f"the body is over {cap} bytes").to_json(), status=413
            )
            resp.force_close()
            return resp
        expect = request.headers.get("Expect", "")
        if request.version < (1, 1):
            return None  # RFC 9110 section 10.1.1: ignored in an HTTP/1.0 request
        if expect.lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer's headers are still to come
            return None
        if expect:
            resp = web.json_response(
                {"error": "expectation_failed", "message": "only 100-continue is understood"},
                status=417,
            )
            resp.force_close()
            return resp
        return None

    return expect


def arrived_body(request: web.Request, cap: int) -> bytes | None:
    """The whole body when it came with the headers (the usual small /sync), else None;
    PayloadTooLarge over `cap`. No timer, no read loop, no coroutine: a hot path calls it
    first and awaits `read_body` only when it answers None."""
    length = request.content_length
    if length is not None and length > cap:
        raise PayloadTooLarge(f"the body is over {cap} bytes")
    content = request.content
    if not content.is_eof():
        return None
    data = content.read_nowait()
    if len(data) > cap:
        raise PayloadTooLarge(f"the body is over {cap} bytes")
    return data


async def read_body(request: web.Request, cap: int, timeout: float = BODY_TIMEOUT) -> bytes:
    """The raw body: 413 once it is known to exceed `cap` (chunked too), 408 when too slow.

    The app's `client_max_size` must be `cap`, so aiohttp stops reading as soon as a body of
    unknown length passes it.
    """
    data = arrived_body(request, cap)
    if data is not None:
        return data
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body is over {cap} bytes") from None
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None


async def _prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.pop("Server", None)
    if response.status in (408, 413):
        # The rest of the body was never read: the connection cannot carry another request.
        response.force_close()


def harden(app: web.Application) -> None:
    """Answers do not name the server's software; a refused body closes its connection."""
    app.on_response_prepare.append(_prepare)


class _ParserNoise(logging.Filter):
    """Shorten aiohttp's report of unparsable input to one line without the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            kind = type(exc).__name__
            record.msg, record.args = "refused a malformed request (%s)", (kind,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_FILTER = _ParserNoise()


def quiet_parser_errors() -> None:
    """Install the filter on aiohttp's server logger (idempotent)."""
    server_log = logging.getLogger("aiohttp.server")
    if _FILTER not in server_log.filters:
        server_log.addFilter(_FILTER)
