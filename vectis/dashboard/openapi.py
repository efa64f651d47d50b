"""The dashboard's OpenAPI 3.1 document, served at `GET /openapi.json`.

The schemas of every body and answer are generated from the models in `schemas.py`, the one
definition the handlers validate and encode with; this module writes only what cannot be
generated: the paths, the statuses each route answers, auth schemes, and a few shapes no
model states (the uniform 401 body, a config's recursive values).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aiohttp import web

from vectis import __version__, contract
from vectis.dashboard import schemas as models

Schema = dict[str, Any]

WORKER_ID = contract.WORKER_ID_PATTERN
TOKEN_ID = r"^[0-9a-f]{8}$"  # noqa: S105 - a pattern, not a credential
STATUSES = list(contract.STATUSES)
JSON = "application/json"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _text(limit: int) -> Schema:
    return _nullable({"type": "string", "maxLength": limit})


TIME: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC, ...Z"}
PORT: Schema = {"type": "integer", "minimum": 1, "maximum": 65535}
COUNT: Schema = {"type": "integer", "minimum": 0}
BOOL: Schema = {"type": "boolean"}
IP: Schema = {
    "type": "string",
    "maxLength": 64,
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
    "description": "A unicast IPv4 or IPv6 address; unspecified, multicast and broadcast "
    "addresses are refused with 400. Stored and answered in canonical form.",
}


def _object(properties: dict[str, Schema], *, closed: bool = True, **extra: Any) -> Schema:
    """An object whose every listed property is always present."""
    doc: Schema = {"type": "object", "properties": properties, "required": list(properties)}
    if closed:
        doc["additionalProperties"] = False
    return {**doc, **extra}


# The shapes no model states; every other schema is generated (see `document`).
SCHEMAS: dict[str, Schema] = {
    "Unauthorized": _object(
        {"error": {"const": "unauthorized"}},
        description="Every auth failure answers this same body; the reason is logged only.",
    ),
    "ConfigValue": {
        "description": "Any JSON value but null, at any depth: workers keep TOML.",
        "anyOf": [
            {"type": ["string", "number", "boolean"]},
            {"type": "array", "items": _ref("ConfigValue")},
            {"type": "object", "additionalProperties": _ref("ConfigValue")},
        ],
    },
}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    doc: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        doc["headers"] = headers
    return doc


def _error(description: str) -> Schema:
    return _json(_ref("Error"), description)


RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
RESPONSES: dict[str, Schema] = {
    "BadRequest": _error("bad input: the message says what was wrong"),
    "Unauthorized": _json(_ref("Unauthorized"), "missing, wrong, expired or revoked credentials"),
    "Forbidden": _error("a session without its X-Vectis-CSRF header on a change"),
    "NotFound": _error("no such object"),
    "Conflict": _error("the IP and port are held by another worker"),
    "TooLarge": _error("the body is over the size cap (1 MiB; a config 512 KiB)"),
    "RateLimited": _json(
        _ref("Error"), "too many failed credentials from this address", RETRY_AFTER
    ),
    "Unavailable": _error("the nonce store is full of unexpired nonces; retry shortly"),
    "WheelUnavailable": _json(
        _ref("Error"), "the worker wheel could not be made (yet); the message says why", RETRY_AFTER
    ),
}


def _use(*names: str) -> dict[str, Schema]:
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "Conflict": "409",
        "TooLarge": "413",
        "RateLimited": "429",
        "Unavailable": "503",
        "WheelUnavailable": "503",
    }
    return {codes[n]: {"$ref": f"#/components/responses/{n}"} for n in names}


def _body(schema: Schema, *, required: bool = True, description: str = "") -> Schema:
    doc: Schema = {"required": required, "content": {JSON: {"schema": schema}}}
    if description:
        doc["description"] = description
    return doc


READ_AUTH: list[Schema] = [{"adminToken": []}, {"session": []}]
WRITE_AUTH: list[Schema] = [{"adminToken": []}, {"session": [], "csrf": []}]
ADMIN_READ = _use("Unauthorized", "RateLimited")
ADMIN_WRITE = _use("Unauthorized", "Forbidden", "RateLimited")


def _param(name: str, pattern: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


WORKER_PARAM = _param(
    "worker_id", WORKER_ID, "a worker's id; any other value answers 404 (401 on heartbeat)"
)
TOKEN_PARAM = _param("token_id", TOKEN_ID, "a token's id; any other value answers 404")


def _op(
    op_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    tag: str,
    security: list[Schema] | None = None,
    body: Schema | None = None,
    parameters: list[Schema] | None = None,
    description: str = "",
) -> Schema:
    doc: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": security if security is not None else [],
        "responses": responses,
    }
    if description:
        doc["description"] = description
    if body is not None:
        doc["requestBody"] = body
    if parameters:
        doc["parameters"] = parameters
    return doc


def _text_file(media: str, description: str) -> Schema:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


SIGNED_FORMAT = (
    "`Authorization: Bearer v1.<worker_id>.<ts>.<nonce>.<sig>`: ts is Unix seconds (1 to 10 "
    "digits), nonce 16 random bytes and sig the HMAC-SHA256 (key: bytes.fromhex(secret)), both "
    "base64url without padding. The string to sign is these lines joined by \\n: vectis-req-v1, "
    "worker_id, ts, nonce, POST, the path exactly as sent, and the lowercase hex SHA-256 of the "
    "raw body. It must be within 300 s of the dashboard's clock, not older than its start, and "
    "its nonce unseen."
)


SIGNATURE = {
    "required": True,
    "description": "v1.<ts>.<sig>: HMAC-SHA256 over vectis-resp-v1, worker_id, ts, the "
    "request's nonce, the status and the hex SHA-256 of the body, joined by \\n",
    "schema": {"type": "string", "pattern": r"^v1\.[0-9]{1,10}\.[A-Za-z0-9_-]{43}$"},
}


def _signed_op(
    op_id: str, summary: str, body: Schema, answer: Schema, signed: str, conflict: str = ""
) -> Schema:
    """A worker-signed call: 401 for any auth failure, the 200 answer signed back."""
    conflict = conflict or "the new IP and port are held by another worker"
    return _op(
        op_id,
        summary,
        {
            "200": _json(answer, signed, {"X-Vectis-Signature": SIGNATURE}),
            "409": _error(conflict),
            **_use("BadRequest", "Unauthorized", "TooLarge", "RateLimited", "Unavailable"),
        },
        tag="workers",
        security=[{"workerSignature": []}],
        parameters=[WORKER_PARAM],
        body=_body(body),
        description="Answers only its exact raw path, without a query. The signature is "
        "checked before the body is read; 429 when this worker is over its budget of signed "
        "calls a minute (VECTIS_WORKER_CALLS_PER_MINUTE) or holds its whole share of the "
        "nonce store; 503 when the nonce store is full.",
    )


def _paths() -> dict[str, Schema]:
    worker_ops = "workers"
    return {
        "/healthz": {
            "get": _op(
                "healthz",
                "200 once the dashboard is ready; reveals nothing",
                {"200": _json(_object({"status": {"const": "ok"}}), "the dashboard is ready")},
                tag="open",
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                {"200": _json({"type": "object"}, "the OpenAPI document")},
                tag="open",
            )
        },
        "/infra/workers/auto-register": {
            "post": _op(
                "autoRegister",
                "Register a worker (docs/protocol.md#registration)",
                {
                    "200": _json(_ref("Registered"), "the same secret registered again"),
                    "201": _json(_ref("Registered"), "a new worker"),
                    **_use("BadRequest", "Unauthorized", "Conflict", "TooLarge", "RateLimited"),
                },
                tag=worker_ops,
                security=[{"enrollmentToken": []}],
                body=_body(_ref("RegistrationBody")),
                description="Identity is the secret: the same secret gets the same id back, "
                "with a changed IP stored and its DNS record moved. A DNS failure never "
                "fails a registration.",
            )
        },
        "/infra/workers/{worker_id}/heartbeat": {
            "post": _signed_op(
                "heartbeat",
                "A worker's signed heartbeat (docs/protocol.md#heartbeat)",
                _ref("HeartbeatBody"),
                _ref("HeartbeatAnswer"),
                "signed with the worker's secret",
            )
        },
        "/infra/workers/{worker_id}/rotate-secret": {
            "post": _signed_op(
                "rotateSecret",
                "Switch a worker to a new secret, signed with its current one",
                _ref("RotationBody"),
                _object({"id": {"type": "string", "pattern": WORKER_ID}, "changed": BOOL}),
                "signed with the new secret, which tells the worker the switch is done; "
                "a repeat signed with the new secret naming it again answers changed: false",
                conflict="the new secret is another worker's",
            )
        },
        "/infra/workers": {
            "get": _op(
                "listWorkers",
                "Every worker, or those with one status",
                {
                    "200": _json(
                        _object({"workers": {"type": "array", "items": _ref("Worker")}}),
                        "the workers",
                    ),
                    **_use("BadRequest"),
                    **ADMIN_READ,
                },
                tag=worker_ops,
                security=READ_AUTH,
                parameters=[
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "an empty value means no filter",
                        "schema": {"enum": [*STATUSES, ""]},
                    }
                ],
            )
        },
        "/infra/workers/sync": {
            "post": _op(
                "syncAll",
                "Sync every worker now; answers when done",
                {
                    "200": _json(
                        _object({k: COUNT for k in ("total", "synced", "failed", "outdated")}),
                        "counts per outcome",
                    ),
                    **ADMIN_WRITE,
                },
                tag=worker_ops,
                security=WRITE_AUTH,
            )
        },
        "/infra/workers/{worker_id}": {
            "get": _op(
                "showWorker",
                "One worker with its config and history of status changes",
                {
                    "200": _json(_ref("WorkerDetail"), "the worker"),
                    **_use("NotFound"),
                    **ADMIN_READ,
                },
                tag=worker_ops,
                security=READ_AUTH,
                parameters=[WORKER_PARAM],
            ),
            "delete": _op(
                "deleteWorker",
                "Deregister a worker; its DNS record goes too",
                {
                    "200": _json(
                        _object(
                            {
                                "id": {"type": "string", "pattern": WORKER_ID},
                                "deleted": {"const": True},
                            }
                        ),
                        "deleted",
                    ),
                    **_use("NotFound"),
                    **ADMIN_WRITE,
                },
                tag=worker_ops,
                security=WRITE_AUTH,
                parameters=[WORKER_PARAM],
            ),
        },
        "/infra/workers/{worker_id}/sync": {
            "post": _op(
                "syncWorker",
                "Sync one worker now; answers the worker after the attempt",
                {
                    "200": _json(_ref("Worker"), "the worker; a failed attempt is its status"),
                    **_use("NotFound"),
                    **ADMIN_WRITE,
                },
                tag=worker_ops,
                security=WRITE_AUTH,
                parameters=[WORKER_PARAM],
            )
        },
        "/infra/workers/{worker_id}/config": {
            "put": _op(
                "setConfig",
                "Set a worker's desired config; it is outdated until it applies it",
                {
                    "200": _json(_ref("Worker"), "the worker with its new desired_revision"),
                    **_use("BadRequest", "NotFound", "TooLarge"),
                    **ADMIN_WRITE,
                },
                tag=worker_ops,
                security=WRITE_AUTH,
                parameters=[WORKER_PARAM],
                body=_body(
                    {
                        "type": "object",
                        "additionalProperties": _ref("ConfigValue"),
                    },
                    description="a JSON object of at most 512 KiB with no null anywhere",
                ),
            )
        },
        "/infra/tokens": {
            "post": _op(
                "createToken",
                "Create an enrollment token",
                {
                    "201": _json(_ref("NewToken"), "the token, shown once"),
                    **_use("BadRequest", "TooLarge"),
                    **ADMIN_WRITE,
                },
                tag="tokens",
                security=WRITE_AUTH,
                body=_body(_ref("TokenRequest"), required=False),
            ),
            "get": _op(
                "listTokens",
                "Every enrollment token",
                {
                    "200": _json(
                        _object({"tokens": {"type": "array", "items": _ref("Token")}}),
                        "the tokens",
                    ),
                    **ADMIN_READ,
                },
                tag="tokens",
                security=READ_AUTH,
            ),
        },
        "/infra/tokens/{token_id}": {
            "delete": _op(
                "revokeToken",
                "Revoke an enrollment token",
                {
                    "200": _json(_ref("Token"), "the revoked token"),
                    **_use("NotFound"),
                    **ADMIN_WRITE,
                },
                tag="tokens",
                security=WRITE_AUTH,
                parameters=[TOKEN_PARAM],
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus text: workers by status, syncs, durations, registrations",
                {
                    "200": _text_file("text/plain", "Prometheus text format 0.0.4"),
                    **ADMIN_READ,
                },
                tag="admin",
                security=READ_AUTH,
            )
        },
        "/login": {
            "post": _op(
                "login",
                "Start a web session with the admin token",
                {
                    "200": _json(
                        _object({"csrf": {"type": "string"}}),
                        "a session cookie (HttpOnly, SameSite=Strict) and its CSRF token",
                        {"Set-Cookie": {"required": True, "schema": {"type": "string"}}},
                    ),
                    **_use("Unauthorized", "TooLarge", "RateLimited"),
                },
                tag="session",
                body=_body(
                    {"type": "object", "properties": {"token": {"type": "string"}}},
                    description='a body that is not {"token": <admin token>} is a 401',
                ),
            )
        },
        "/logout": {
            "post": _op(
                "logout",
                "End the web session of the cookie, if any",
                {"200": _json(_object({"authenticated": {"const": False}}), "logged out")},
                tag="session",
            )
        },
        "/session": {
            "get": _op(
                "session",
                "Whether the cookie holds a live session, and its CSRF token",
                {
                    "200": _json(
                        {
                            "oneOf": [
                                _object({"authenticated": {"const": False}}),
                                _object(
                                    {"authenticated": {"const": True}, "csrf": {"type": "string"}}
                                ),
                            ]
                        },
                        "the session's state",
                    )
                },
                tag="session",
                parameters=[_cookie()],
            )
        },
        "/": {
            "get": _op(
                "index",
                "The web page",
                {"200": _text_file("text/html", "the page")},
                tag="files",
            )
        },
        "/static/{name}": {
            "get": _op(
                "static",
                "A file of the web page",
                {
                    "200": {
                        "description": "the file",
                        "content": {"*/*": {"schema": {"type": "string"}}},
                    },
                    **_use("NotFound"),
                },
                tag="files",
                parameters=[
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "a file name directly inside the page's folder",
                    }
                ],
            )
        },
        "/install.sh": {
            "get": _op(
                "installScript",
                "The install script (docs/protocol.md#worker-builds-dist-and-installsh)",
                {
                    "200": _text_file(
                        "text/x-shellscript",
                        "the script, with the worker wheel's URL and SHA-256 filled in",
                    ),
                    **_use("BadRequest", "NotFound", "WheelUnavailable"),
                },
                tag="files",
            )
        },
        "/dist/{name}": {
            "get": _op(
                "workerWheel",
                "The wheel of the vectis this dashboard runs, which its install.sh installs",
                {
                    "200": {
                        "description": "the wheel",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    **_use("NotFound", "WheelUnavailable"),
                },
                tag="files",
                parameters=[
                    _param(
                        "name",
                        r"^vectis-[^/]+\.whl$",
                        "vectis-<version>-py3-none-any.whl of the dashboard's version; any "
                        "other name answers 404",
                    )
                ],
            )
        },
        "/dist/constraints.txt": {
            "get": _op(
                "workerConstraints",
                "The dependency versions the dashboard runs with, as pip constraints",
                {
                    "200": _text_file("text/plain", "one name==version line per dependency"),
                    **_use("WheelUnavailable"),
                },
                tag="files",
            )
        },
        "/dist/worker.json": {
            "get": _op(
                "workerBuild",
                "The build workers install: version, wheel path and SHA-256, constraints",
                {
                    "200": _json(_ref("DistManifest"), "the served build"),
                    **_use("WheelUnavailable"),
                },
                tag="files",
            )
        },
    }


def _cookie() -> Schema:
    return {
        "name": "vectis_session",
        "in": "cookie",
        "required": False,
        "schema": {"type": "string"},
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document as plain data."""
    schemas = {**models.components(), **SCHEMAS}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vectis dashboard",
            "version": __version__,
            "description": "Registry of worker servers: registration, heartbeats, syncs, "
            'config and enrollment tokens. Every error is {"error", "message"} JSON, '
            'except auth failures, which are always the same 401 {"error": "unauthorized"}. '
            "A method a path does not serve is a 405.",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "responses": RESPONSES,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the admin token (VECTIS_ADMIN_TOKEN, or printed once)",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "vectis_session",
                    "description": "the web page's session, from POST /login",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Vectis-CSRF",
                    "description": "the session's CSRF token; needed on POST, PUT, DELETE",
                },
                "enrollmentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an enrollment token (VECTIS_TOKEN or POST /infra/tokens)",
                },
                "workerSignature": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "v1.<worker_id>.<ts>.<nonce>.<sig>",
                    "description": SIGNED_FORMAT,
                },
            },
        },
    }


@cache
def document_bytes() -> bytes:
    return json.dumps(document(), indent=1).encode("utf-8")


async def serve(request: web.Request) -> web.Response:
    """`GET /openapi.json`: no auth, since it describes the API and reveals no data."""
    return web.Response(body=document_bytes(), content_type=JSON)
