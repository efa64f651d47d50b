"""`create_app()`: the dashboard's one route table, error middleware and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web

from vectis import httpserver
from vectis.dashboard import api, auth, openapi
from vectis.dashboard.api import ROUTES
from vectis.dashboard.core import Dashboard
from vectis.dashboard.dist import WorkerDist
from vectis.dashboard.keys import DASHBOARD, DIST
from vectis.dashboard.settings import DashboardSettings
from vectis.errors import VectisError

log = logging.getLogger("vectis.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as `{"error", "message"}` JSON; a surprise is logged, never shown."""
    return await answer(request.app[DASHBOARD], request, handler)


async def answer(dash: Dashboard, request: web.Request, handler: Handler) -> web.StreamResponse:
    """The middleware's work, for routed requests and the fast path alike."""
    try:
        resp = await handler(request)
    except VectisError as exc:
        resp = web.json_response(exc.to_json(), status=exc.http_status)
        if isinstance(exc, (auth.BadCredential, auth.Blocked)):
            resp[httpserver.NOT_LOGGED] = True  # the limiter logs these as counts
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int):
            resp.headers["Retry-After"] = str(retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        resp = web.json_response({"error": code, "message": exc.reason}, status=exc.status)
        if "Allow" in exc.headers:  # RFC 9110: a 405 names the methods the path serves
            resp.headers["Allow"] = exc.headers["Allow"]
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        if dash.store.unavailable(exc):
            log.warning(
                "%s %s: the database is unreachable (%s)",
                request.method,
                request.path,
                type(exc).__name__,
            )
            resp = web.json_response(
                {"error": "unavailable", "message": "the database is unreachable; retry shortly"},
                status=503,
            )
            resp.headers["Retry-After"] = "1"
            resp.headers.setdefault("X-Content-Type-Options", "nosniff")
            return resp
        log.exception("unexpected error in %s %s", request.method, request.path)
        resp = web.json_response(
            {"error": "internal", "message": "internal error; see the dashboard's log"},
            status=500,
        )
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


def create_app(settings: DashboardSettings, dashboard: Dashboard | None = None) -> web.Application:
    """The dashboard application; its store, DNS and tasks start with the app's runner."""
    app = web.Application(middlewares=[errors], client_max_size=settings.body_limit)
    app[DASHBOARD] = dashboard or Dashboard(settings)
    app[DIST] = WorkerDist(settings.data_dir / "dist", settings.worker_wheel)
    app.add_routes(ROUTES)
    app[httpserver.FAST_PATH] = _fast_path(app[DASHBOARD])
    app.router.add_get("/openapi.json", openapi.serve)
    app.cleanup_ctx.append(_lifecycle)
    httpserver.harden(app)
    return app


def _fast_path(dash: Dashboard) -> httpserver.FastPath:
    """A plain heartbeat goes straight to its handler, past the router, the middleware chain
    and the response signal: about a tenth of a busy dashboard's heartbeat (issue 16). Same
    checks, same answers; anything else (another path, an `Expect` header) is routed."""

    def fast(request: web.BaseRequest) -> Awaitable[web.StreamResponse] | None:
        if request.method != "POST" or hdrs.EXPECT in request.headers:
            return None
        worker_id = api.heartbeat_path_id(request.raw_path)
        if worker_id is None or not isinstance(request, web.Request):
            return None
        return _heartbeat(dash, request, worker_id)

    return fast


async def _heartbeat(dash: Dashboard, request: web.Request, worker_id: str) -> web.StreamResponse:
    def handle(request: web.Request) -> Awaitable[web.StreamResponse]:
        return api.fast_heartbeat(dash, request, worker_id)

    return httpserver.bare(await answer(dash, request, handle))


async def _failure_counts(dash: Dashboard) -> None:
    """Log the counts of failed credentials soon after each counting window closes."""
    every = max(0.5, min(5.0, dash.access.limiter.window / 4))
    while True:
        await asyncio.sleep(every)
        dash.access.log_failure_counts()


#: Seconds between two summary lines of the heartbeats answered without a line of their own.
HEARTBEAT_SUMMARY = 60.0


async def _heartbeat_counts(dash: Dashboard) -> None:
    """One line a minute with the count of heartbeats answered (none when there were none)."""
    if dash.settings.access_log:
        return
    told = dash.metrics.heartbeats["ok"]
    while True:
        await asyncio.sleep(HEARTBEAT_SUMMARY)
        now = dash.metrics.heartbeats["ok"]
        if now > told:
            log.info(
                "%d heartbeats answered in the last %g s (VECTIS_ACCESS_LOG=1 logs each)",
                now - told,
                HEARTBEAT_SUMMARY,
            )
        told = now


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    dash = app[DASHBOARD]
    try:
        await dash.start()
    except BaseException:
        await dash.stop()
        raise
    tasks = [
        asyncio.create_task(dash.dns.forever(), name="vectis-dns"),
        asyncio.create_task(_failure_counts(dash), name="vectis-auth-log"),
        asyncio.create_task(_heartbeat_counts(dash), name="vectis-heartbeat-log"),
    ]
    if dash.settings.sync_interval > 0:
        tasks.append(asyncio.create_task(dash.sweeps.forever(), name="vectis-sweep"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await dash.stop()
