"""What both daemons' aiohttp servers share: timeouts, capped body reads, quiet parser errors.

aiohttp's defaults suit a trusted network, not a port on the internet: an idle connection is
kept for an hour, a body is read for as long as the client dribbles it, bytes that are not
HTTP are logged verbatim with a traceback, and every answer names the server's software.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

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


async def read_body(request: web.Request, cap: int, timeout: float = BODY_TIMEOUT) -> bytes:
    """The raw body: 413 once it is known to exceed `cap` (chunked too), 408 when too slow.

    The app's `client_max_size` must be `cap`, so aiohttp stops reading as soon as a body of
    unknown length passes it.
    """
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"the body is over {cap} bytes")
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
