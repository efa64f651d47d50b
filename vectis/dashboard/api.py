"""HTTP handlers: parse the request, call one method of one part of `Dashboard`, render JSON."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from aiohttp import web

from vectis import httpserver
from vectis.contract import GROUP_NAME_ROUTE, WORKER_ID_ROUTE
from vectis.crypto.signing import SIGNATURE_HEADER
from vectis.dashboard import auth, dist, pages, schemas, validate
from vectis.dashboard.core import Dashboard
from vectis.dashboard.keys import DASHBOARD, DIST
from vectis.dashboard.names import is_worker_id
from vectis.errors import BadRequest, Forbidden, NotFound, Unauthorized


def _dash(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD]


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


async def read_body(request: web.Request) -> bytes:
    """The raw body; a declared size over the cap is refused before anything is read."""
    return await httpserver.read_body(request, _dash(request).settings.body_limit)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def require_admin(request: web.Request) -> None:
    """Bearer admin token, or a session cookie (plus the CSRF header on changes)."""
    dash = _dash(request)
    header = request.headers.get("Authorization")
    if header is not None:
        dash.access.refuse_blocked(_address(request))
        if dash.access.is_admin_token(auth.bearer(header)):
            return
        raise dash.access.failed_attempt(_address(request), "bad admin token")
    session = await dash.access.sessions.get(request.cookies.get(auth.SESSION_COOKIE), time.time())
    if session is None:
        raise Unauthorized("no admin token or session")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        _check_csrf(request, session)


def _check_csrf(request: web.Request, session: auth.Session) -> None:
    sent = request.headers.get(auth.CSRF_HEADER, "")
    if not sent.isascii() or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden(f"a missing or wrong {auth.CSRF_HEADER} header")


def _worker_id(request: web.Request) -> str:
    return request.match_info["worker_id"]


# -- open --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    if not await _dash(request).store.healthy():
        return _json({"status": "unavailable", "message": "the database is unreachable"}, 503)
    return _json({"status": "ok"})


async def auto_register(request: web.Request) -> web.Response:
    body = await read_body(request)
    answer, created = await _dash(request).enrollment.register(
        _address(request), request.headers.get("Authorization"), body
    )
    return _json(answer, 201 if created else 200)


def _signed_path(request: web.Request, action: str) -> str:
    """The worker id of a worker-signed route, which answers only its exact raw path
    (docs/protocol.md, Signed requests)."""
    worker_id = _worker_id(request)
    if not is_worker_id(worker_id) or request.raw_path != f"/infra/workers/{worker_id}/{action}":
        raise Unauthorized(f"{action} path is not canonical")
    return worker_id


def _signed_answer(answer: bytes, signature: str) -> web.Response:
    # Bare: the fast path runs no on_response_prepare hook to drop the Server header.
    return httpserver.BareResponse(
        body=answer,
        content_type="application/json",
        headers={SIGNATURE_HEADER: signature},
    )


async def heartbeat(request: web.Request) -> web.Response:
    body = await read_body(request)
    worker_id = _signed_path(request, "heartbeat")
    return await signed_heartbeat(_dash(request), request, worker_id, body)


_BEAT_PREFIX, _BEAT_SUFFIX = "/infra/workers/", "/heartbeat"


def heartbeat_path_id(raw_path: str) -> str | None:
    """The worker id of a canonical heartbeat path, else None."""
    if raw_path.startswith(_BEAT_PREFIX) and raw_path.endswith(_BEAT_SUFFIX):
        worker_id = raw_path[len(_BEAT_PREFIX) : -len(_BEAT_SUFFIX)]
        if is_worker_id(worker_id):
            return worker_id
    return None


async def fast_heartbeat(dash: Dashboard, request: web.Request, worker_id: str) -> web.Response:
    """`heartbeat` for a request whose path `heartbeat_path_id` found canonical."""
    body = await httpserver.read_body(request, dash.settings.body_limit)
    return await signed_heartbeat(dash, request, worker_id, body)


async def signed_heartbeat(
    dash: Dashboard, request: web.Request, worker_id: str, body: bytes
) -> web.Response:
    answer, signature = await dash.worker_calls.heartbeat(
        worker_id, request.raw_path, request.headers.get("Authorization"), body
    )
    resp = _signed_answer(answer, signature)
    if not dash.settings.access_log:
        # Counted (/metrics) and summarised once a minute: a line each would cost a busy
        # dashboard about a tenth of its time, and journald as much again.
        resp[httpserver.NOT_LOGGED] = True
    return resp


async def rotate_secret(request: web.Request) -> web.Response:
    body = await read_body(request)
    worker_id = _signed_path(request, "rotate-secret")
    answer, signature = await _dash(request).worker_calls.rotate_secret(
        worker_id, request.raw_path, request.headers.get("Authorization"), body
    )
    return _signed_answer(answer, signature)


# -- web session -------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    body = await read_body(request)
    sid, csrf = await _dash(request).access.login(_address(request), body)
    resp = _json({"csrf": csrf})
    resp.set_cookie(
        auth.SESSION_COOKIE,
        sid,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=request.secure,
        max_age=int(auth.SESSION_TTL),
    )
    return resp


async def logout(request: web.Request) -> web.Response:
    """End the session; a live session's cookie needs its CSRF header, like any other change."""
    dash = _dash(request)
    sid = request.cookies.get(auth.SESSION_COOKIE)
    found = await dash.access.sessions.get(sid, time.time())
    if found is not None:
        _check_csrf(request, found)
    await dash.access.sessions.drop(sid)
    resp = _json({"authenticated": False})
    resp.del_cookie(auth.SESSION_COOKIE, path="/")
    return resp


async def session(request: web.Request) -> web.Response:
    found = await _dash(request).access.sessions.get(
        request.cookies.get(auth.SESSION_COOKIE), time.time()
    )
    if found is None:
        return _json({"authenticated": False})
    return _json({"authenticated": True, "csrf": found.csrf})


# -- admin -------------------------------------------------------------------------------------


def _json_bytes(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def _revalidated(request: web.Request, body: bytes) -> web.Response:
    """A JSON answer with an ETag; 304 with no body when the caller holds it already, so a
    page that polls an unchanged list costs a few bytes."""
    tag = hashlib.blake2b(body, digest_size=12).hexdigest()
    held = request.if_none_match
    if held is not None and any(e.value == tag for e in held):
        resp = web.Response(status=304)
    else:
        resp = _json_bytes(body)
    resp.etag = tag
    resp.headers["Cache-Control"] = "private, no-cache"
    return resp


async def list_workers(request: web.Request) -> web.Response:
    await require_admin(request)
    admin = _dash(request).admin
    if validate.is_paged(request.query):
        return _revalidated(request, await admin.page_workers(request.query))
    status = request.query.get("status") or None
    return _revalidated(request, await admin.list_workers_json(status))


async def workers_summary(request: web.Request) -> web.Response:
    await require_admin(request)
    return _revalidated(request, await _dash(request).admin.summary(request.query))


async def show_worker(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json(await _dash(request).admin.show_worker(_worker_id(request)))


async def sync_worker(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json(await _dash(request).sweeps.sync_worker(_worker_id(request)))


async def sync_all(request: web.Request) -> web.Response:
    await require_admin(request)
    background = request.query.get("background", "false")
    if background not in ("true", "false"):
        raise BadRequest("'background' must be true or false")
    sweeps = _dash(request).sweeps
    if background == "true":
        job = await sweeps.start_job()
        return _json_bytes(schemas.encode(job.model()), 202)
    return _json((await sweeps.sync_all()).as_dict())


async def show_job(request: web.Request) -> web.Response:
    await require_admin(request)
    job = _dash(request).sweeps.job(request.match_info["job_id"])
    return _json_bytes(schemas.encode(job.model()))


async def set_config(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_body(request)
    return _json(await _dash(request).admin.set_config(_worker_id(request), body))


async def set_labels(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_body(request)
    return _json(await _dash(request).admin.set_labels(_worker_id(request), body))


async def list_groups(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json_bytes(await _dash(request).admin.list_groups())


async def show_group(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json_bytes(await _dash(request).admin.show_group(request.match_info["name"]))


async def put_group(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_body(request)
    answer, created = await _dash(request).admin.put_group(request.match_info["name"], body)
    return _json_bytes(answer, 201 if created else 200)


async def delete_group(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json_bytes(await _dash(request).admin.delete_group(request.match_info["name"]))


async def delete_worker(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json(await _dash(request).admin.delete_worker(_worker_id(request)))


async def create_token(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_body(request)
    return _json(await _dash(request).admin.create_token(body), 201)


async def list_tokens(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json({"tokens": await _dash(request).admin.list_tokens()})


async def revoke_token(request: web.Request) -> web.Response:
    await require_admin(request)
    return _json(await _dash(request).admin.revoke_token(request.match_info["token_id"]))


async def metrics(request: web.Request) -> web.Response:
    await require_admin(request)
    text = await _dash(request).admin.metrics_text()
    return web.Response(
        body=text.encode("utf-8"),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


# -- files -------------------------------------------------------------------------------------


def _page(body: bytes, content_type: str) -> web.Response:
    resp = web.Response(body=body, headers={"Content-Type": content_type})
    resp.headers["Content-Security-Policy"] = pages.CSP
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


async def index(request: web.Request) -> web.Response:
    return _page(pages.index_page(), "text/html; charset=utf-8")


async def static(request: web.Request) -> web.Response:
    return _page(*pages.static_file(request.match_info["name"]))


async def install_sh(request: web.Request) -> web.Response:
    """The script with this dashboard's worker wheel (URL, SHA-256) and constraints filled in."""
    build = await request.app[DIST].get()
    try:
        body = dist.served_script(pages.install_script(), build, _origin(request))
    except ValueError:
        raise BadRequest("the Host header is not a plain host name or address") from None
    return web.Response(
        body=body,
        headers={"Content-Type": "text/x-shellscript; charset=utf-8", "Cache-Control": "no-cache"},
    )


def _origin(request: web.Request) -> str:
    """The scheme and host this request reached the dashboard by."""
    return f"{request.scheme}://{request.host}"


async def dist_wheel(request: web.Request) -> web.StreamResponse:
    build = await request.app[DIST].get()
    if request.match_info["name"] != build.name:
        raise NotFound(f"this dashboard serves {build.name} only")
    return web.FileResponse(
        build.wheel,
        headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-cache"},
    )


async def dist_constraints(request: web.Request) -> web.Response:
    build = await request.app[DIST].get()
    return web.Response(
        body=build.constraints,
        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"},
    )


async def dist_manifest(request: web.Request) -> web.Response:
    return _json((await request.app[DIST].get()).manifest())


# A worker ID's shape in the route, so that the fixed paths beside it (/infra/workers/sync,
# /auto-register) answer other methods with 405 rather than "no worker 'sync'".
_ONE_WORKER = f"/infra/workers/{{worker_id:{WORKER_ID_ROUTE}}}"
_ONE_GROUP = f"/infra/config/groups/{{name:{GROUP_NAME_ROUTE}}}"

_ROUTES = [
    web.get("/healthz", healthz, allow_head=True),
    web.post("/infra/workers/auto-register", auto_register),
    web.post("/infra/workers/sync", sync_all),
    web.get("/infra/workers", list_workers),
    web.get("/infra/workers/summary", workers_summary),
    web.get("/infra/jobs/{job_id:[0-9a-f]{12}}", show_job),
    web.get(_ONE_WORKER, show_worker),
    web.delete(_ONE_WORKER, delete_worker),
    web.post("/infra/workers/{worker_id}/sync", sync_worker),
    web.post("/infra/workers/{worker_id}/heartbeat", heartbeat),
    web.post("/infra/workers/{worker_id}/rotate-secret", rotate_secret),
    web.put("/infra/workers/{worker_id}/config", set_config),
    web.put("/infra/workers/{worker_id}/labels", set_labels),
    web.get("/infra/config/groups", list_groups),
    web.get(_ONE_GROUP, show_group),
    web.put(_ONE_GROUP, put_group),
    web.delete(_ONE_GROUP, delete_group),
    web.post("/infra/tokens", create_token),
    web.get("/infra/tokens", list_tokens),
    web.delete("/infra/tokens/{token_id}", revoke_token),
    web.get("/metrics", metrics),
    web.post("/login", login),
    web.post("/logout", logout),
    web.get("/session", session),
    web.get("/", index),
    web.get("/static/{name}", static),
    web.get("/install.sh", install_sh),
    web.get(dist.CONSTRAINTS_PATH, dist_constraints),
    web.get(dist.MANIFEST_PATH, dist_manifest),
    web.get("/dist/{name:vectis-[^/]+[.]whl}", dist_wheel),
]

# Every route refuses an announced body over the cap with 413 instead of `100 Continue`.
_EXPECT = httpserver.expect_within(lambda request: _dash(request).settings.body_limit)
ROUTES = [
    web.RouteDef(r.method, r.path, r.handler, {**r.kwargs, "expect_handler": _EXPECT})
    for r in _ROUTES
]
