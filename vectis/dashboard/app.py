"""`create_app()`: the dashboard's one route table, error middleware and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from vectis import httpserver
from vectis.dashboard import auth, openapi
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
        if request.app[DASHBOARD].store.unavailable(exc):
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
    app.router.add_get("/openapi.json", openapi.serve)
    app.cleanup_ctx.append(_lifecycle)
    httpserver.harden(app)
    return app


async def _failure_counts(dash: Dashboard) -> None:
    """Log the counts of failed credentials soon after each counting window closes."""
    every = max(0.5, min(5.0, dash.access.limiter.window / 4))
    while True:
        await asyncio.sleep(every)
        dash.access.log_failure_counts()


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
