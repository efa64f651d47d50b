"""The worker daemon: `create_app()` with signed `POST /sync` and `GET /healthz`.

The wire contract: docs/protocol.md#sync and docs/protocol.md#signed-requests.

Anything but those two routes answers the same 401 as a bad signature, so the port reveals
nothing. One middleware turns errors into the JSON error shape and hands every outcome to the
request log (vectis/worker/requestlog.py): a line per refusal, successes counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import hdrs, web

from vectis import __version__, httpserver, sync_body
from vectis.config import toml_problem
from vectis.configfile import conf_path, read_conf, secret_path
from vectis.crypto.secrets import key_from_secret, read_secret_file
from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    AuthFailure,
    NonceStoreFull,
    body_sha256,
    sign_response,
)
from vectis.errors import (
    BadRequest,
    ServiceUnavailable,
    Unauthorized,
    VectisError,
)
from vectis.worker import tls
from vectis.worker.host import ServeSettings, resolve_settings
from vectis.worker.notify import notify
from vectis.worker.requestlog import SUMMARY_INTERVAL, RequestLog
from vectis.worker.runtime import FLUSH_INTERVAL, WorkerRuntime
from vectis.worker.stats import StatsSampler

log = logging.getLogger("vectis.worker")

SYNC_PATH = "/sync"
SHUTDOWN_TIMEOUT = 5.0

RUNTIME = web.AppKey("runtime", WorkerRuntime)
SAMPLER = web.AppKey("sampler", StatsSampler)
FLUSH_EVERY = web.AppKey("flush_every", float)
REQUEST_LOG = web.AppKey("request_log", RequestLog)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RawHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_HEALTHY = b'{"status":"ok"}'
_UNAUTHORIZED = b'{"error":"unauthorized"}'
_SYNC_OK = f"POST {SYNC_PATH} 200"


def _json(status: int, body: bytes) -> web.Response:
    # Bare: the fast path below runs no on_response_prepare hook to drop the Server header.
    return httpserver.BareResponse(status=status, body=body, content_type="application/json")


@web.middleware
async def outcome_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every outcome to an answer and hand it to the request log (never a secret)."""
    return await _answer(request.app, request, handler)


async def _answer(
    app: web.Application, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """The middleware's work, for the routed requests and the fast path alike."""
    reason = ""
    try:
        response = await handler(request)
    except Unauthorized as exc:
        reason, response = exc.message, _json(401, _UNAUTHORIZED)
    except VectisError as exc:
        reason = exc.message
        response = _json(exc.http_status, json.dumps(exc.to_json()).encode())
    except web.HTTPException as exc:
        # No such route or method: the same 401 as a bad signature.
        reason, response = f"no route ({exc.status})", _json(401, _UNAUTHORIZED)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        log.error(
            "%s %s failed: %s",
            httpserver.printable(request.method, 20),
            httpserver.logged_path(request),
            type(exc),
        )
        body = b'{"error":"internal","message":"internal error"}'
        reason, response = "internal error", _json(500, body)
    worker_id = app[RUNTIME].worker_id or "-"
    if not reason and response.status == 200 and request.raw_path == SYNC_PATH:
        app[REQUEST_LOG].succeeded(_SYNC_OK, worker_id)  # the usual line, not built again
        return response
    method, path = httpserver.printable(request.method, 20), httpserver.logged_path(request)
    line = f"{method} {path} {response.status}"
    if reason:
        app[REQUEST_LOG].refused(line, worker_id, httpserver.printable(reason))
    else:
        app[REQUEST_LOG].succeeded(line, worker_id)
    if response.status in (408, 413):
        # The rest of the body was never read: the connection cannot carry another request.
        response.force_close()
    return response


def parse_sync_body(body: bytes) -> tuple[int, dict[str, Any]]:
    """`{"revision": N, "config": {...}}` from the raw body, or BadRequest."""
    try:
        parsed = sync_body.decode(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    problem = toml_problem(parsed.config, "config")
    if problem:
        raise BadRequest(problem)
    return parsed.revision, parsed.config


class LastBody:
    """The last body that parsed and what it parsed to.

    The dashboard sends the same bytes until the desired config changes, so the strict parse
    (and its walk over the whole config) runs once per new body, not once per request.
    """

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.parsed: tuple[int, dict[str, Any]] = (0, {})

    def parse(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """`parse_sync_body(body)`, from memory when the bytes are the last ones."""
        if body != self.body:
            self.parsed = parse_sync_body(body)
            self.body = body
        return self.parsed


LAST_BODY = web.AppKey("last_body", LastBody)


class LastAnswer:
    """The last `/sync` answer body and its SHA-256.

    It changes only with the worker id, the applied revision, the apply under way or its
    error, or the stats (at most once per the sampler's ttl), so the JSON is built and hashed
    once, not once per request.
    """

    def __init__(self) -> None:
        self._of: tuple[str, int, str, int | None, str | None] | None = None
        self.body = b""
        self.sha256 = ""

    def get(
        self,
        worker_id: str,
        applied_revision: int,
        stats: str,
        applying: int | None = None,
        apply_error: str | None = None,
    ) -> tuple[bytes, str]:
        """(body, its SHA-256 hex) for these facts; `stats` is the sampler's JSON fragment."""
        of = (worker_id, applied_revision, stats, applying, apply_error)
        if of != self._of:
            self.body = (
                f'{{"status":"online","version":{json.dumps(__version__)},'
                f'"worker_id":{json.dumps(worker_id)},'
                f'"applied_revision":{applied_revision},'
                f'"applying_revision":{json.dumps(applying)},'
                f'"apply_error":{json.dumps(apply_error)},{stats}}}'
            ).encode()
            self.sha256 = body_sha256(self.body)
            self._of = of
        return self.body, self.sha256


LAST_ANSWER = web.AppKey("last_answer", LastAnswer)


async def handle_sync(request: web.Request) -> web.StreamResponse:
    """Verify, apply a newer revision, answer the signed status (docs/protocol.md#sync)."""
    return await _sync(request.app, request)


async def _sync(app: web.Application, request: web.Request) -> web.StreamResponse:
    rt = app[RUNTIME]
    if request.raw_path != SYNC_PATH:
        raise Unauthorized(f"signed route answers only the exact path {SYNC_PATH}")
    cap = rt.settings.max_body
    body = httpserver.arrived_body(request, cap) or await httpserver.read_body(request, cap)
    auth = request.headers.getall("Authorization", [])
    if len(auth) > 1:
        raise Unauthorized("more than one authorization header")
    header = auth[0] if auth else None
    try:
        signed, key = rt.authenticated(header, request.method, SYNC_PATH, body) or (
            await rt.authenticate(header, request.method, SYNC_PATH, body)
        )
    except AuthFailure as exc:
        raise Unauthorized(exc.reason) from None
    except NonceStoreFull:
        raise ServiceUnavailable("too many recent requests; retry in a few minutes") from None
    revision, config = app[LAST_BODY].parse(body)
    outcome = rt.noted(revision) or await rt.sync_succeeded(revision, config)
    answer, answer_hash = app[LAST_ANSWER].get(
        signed.worker_id,
        outcome.applied_revision,
        app[SAMPLER].json_fragment(),
        rt.applying,
        rt.conf.state.apply_error,
    )
    sig = sign_response(
        key, signed.worker_id, signed.nonce, 200, answer, ts=int(rt.clock()), body_hash=answer_hash
    )
    headers = {hdrs.CONTENT_TYPE: "application/json", SIGNATURE_HEADER: sig}
    return httpserver.WholeAnswer(200, answer, headers)


async def handle_healthz(request: web.Request) -> web.Response:
    """Alive, and nothing more."""
    return _json(200, _HEALTHY)


def fast_path(app: web.Application, routed: RawHandler) -> RawHandler:
    """The server's request handler: a plain `POST /sync` goes straight to `_sync`.

    aiohttp's router, middleware chain and response signal cost about a tenth of a busy
    `/sync` (issue 16). The fast path gives the same checks, answers and log lines through
    `_answer`; any other request (another path or method, an `Expect` header) is routed.
    """

    def sync(request: web.Request) -> Awaitable[web.StreamResponse]:
        return _sync(app, request)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if (
            request.method == "POST"
            and request.raw_path == SYNC_PATH
            and hdrs.EXPECT not in request.headers
            and isinstance(request, web.Request)
        ):
            return await _answer(app, request, sync)
        return await routed(request)

    return handle


class Runner(httpserver.Runner):
    """The shared runner, with `fast_path` in front of the application's routing."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = fast_path(self.app, server.request_handler)
        return server


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The lazy last_sync writer, the request log's summary and the heartbeat loop."""
    rt = app[RUNTIME]
    tasks = [asyncio.create_task(rt.flush_every(app[FLUSH_EVERY]), name="flush-last-sync")]
    tasks.append(asyncio.create_task(_summaries(app[REQUEST_LOG]), name="request-summary"))
    beat_now = asyncio.Event()
    if rt.applier is not None:
        rt.applied_hook = beat_now.set  # the dashboard hears of an apply's outcome at once
    tasks.append(asyncio.create_task(_heartbeat(rt, beat_now), name="heartbeat"))
    yield
    if rt.applier is not None:
        await rt.applier.close()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception as exc:  # a failed loop must not block a clean shutdown
                log.error("%s stopped with %s", task.get_name(), type(exc).__name__)
    app[REQUEST_LOG].summarise()
    await rt.flush()


async def _summaries(request_log: RequestLog) -> None:
    while True:
        await asyncio.sleep(SUMMARY_INTERVAL)
        request_log.summarise()


def _heartbeat(rt: WorkerRuntime, beat_now: asyncio.Event) -> Coroutine[Any, Any, None]:
    """The heartbeat loop (docs/protocol.md#heartbeat).

    Started even before a dashboard URL is known: the loop reads worker.conf on every beat and
    waits quietly until a registration writes the URL and id there. A newer revision in a
    heartbeat's answer goes to the applier, like one from `/sync`.
    """
    from vectis.worker.heartbeat_loop import heartbeat_loop

    s = rt.settings
    offer = rt.offer if rt.applier is not None else None
    return heartbeat_loop(s.ip, s.port, s.heartbeat_interval, offer=offer, beat_now=beat_now)


def create_app(
    runtime: WorkerRuntime,
    sampler: StatsSampler,
    *,
    flush_every: float = FLUSH_INTERVAL,
) -> web.Application:
    """The worker's application: two routes, one middleware, background work in cleanup_ctx."""
    app = web.Application(
        middlewares=[outcome_middleware], client_max_size=runtime.settings.max_body
    )
    app[RUNTIME] = runtime
    app[SAMPLER] = sampler
    app[FLUSH_EVERY] = flush_every
    app[REQUEST_LOG] = RequestLog(log, every_request=runtime.settings.access_log)
    app[LAST_BODY] = LastBody()
    app[LAST_ANSWER] = LastAnswer()
    expect = httpserver.expect_within(lambda r: r.app[RUNTIME].settings.max_body)
    app.router.add_post(SYNC_PATH, handle_sync, expect_handler=expect)
    app.router.add_get("/healthz", handle_healthz, allow_head=False)
    app.cleanup_ctx.append(_background)
    httpserver.harden(app)
    return app


async def _serve(
    settings: ServeSettings,
    runtime: WorkerRuntime,
    sampler: StatsSampler,
    served: tls.ServedKey | None = None,
) -> None:
    app = create_app(runtime, sampler)
    httpserver.quiet_parser_errors()
    runner = Runner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        **httpserver.runner_options(),
    )
    await runner.setup()
    # Everything made so far lives as long as the daemon: keep it out of the collector's full
    # passes, which otherwise walk every module's objects and stall busy /sync answers.
    gc.freeze()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        reuse_address=True,
        ssl_context=served.context if served is not None else None,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise VectisError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    who = runtime.worker_id or "not registered: /sync answers 401 until registration"
    how = f"TLS, pin {served.pin}" if served is not None else "plain HTTP: no TLS key"
    log.info(
        "vectis %s worker listening on %s:%d (%s; %s)",
        __version__,
        settings.host,
        settings.port,
        how,
        who,
    )
    watch = asyncio.create_task(served.watch()) if served is not None else None
    notify("READY=1")
    await stop.wait()
    log.info("stopping")
    notify("STOPPING=1")
    if watch is not None:
        watch.cancel()
    await runner.cleanup()
    log.info("stopped")


def run(*, host: str | None, port: int | None, ip: str | None) -> None:
    """Check the secret and worker.conf, then serve until SIGTERM or SIGINT."""
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    path = conf_path()
    conf = read_conf(path)
    key = key_from_secret(read_secret_file(secret_path()))
    settings = resolve_settings(conf, os.environ, host=host, port=port, ip=ip)
    served = tls.served_key(secret_path())  # never made here: no key, plain HTTP as before

    async def main() -> None:
        runtime = WorkerRuntime(path, key, settings, conf=conf, clock=time.time)
        sampler = StatsSampler(settings.stats_mounts)
        await _serve(settings, runtime, sampler, served)

    asyncio.run(main())
