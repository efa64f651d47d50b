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


def ref(name: str) -> Schema:
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


def closed_object(properties: dict[str, Schema], *, closed: bool = True, **extra: Any) -> Schema:
    """An object whose every listed property is always present."""
    doc: Schema = {"type": "object", "properties": properties, "required": list(properties)}
    if closed:
        doc["additionalProperties"] = False
    return {**doc, **extra}


# The shapes no model states; every other schema is generated (see `document`).
SCHEMAS: dict[str, Schema] = {
    "Unauthorized": closed_object(
        {"error": {"const": "unauthorized"}},
        description="Every auth failure answers this same body; the reason is logged only.",
    ),
    "ConfigValue": {
        "description": "Any JSON value but null, at any depth: workers keep TOML.",
        "anyOf": [
            {"type": ["string", "number", "boolean"]},
            {"type": "array", "items": ref("ConfigValue")},
            {"type": "object", "additionalProperties": ref("ConfigValue")},
        ],
    },
}


def answer(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    doc: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        doc["headers"] = headers
    return doc


def error_answer(description: str) -> Schema:
    return answer(ref("Error"), description)


RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
RESPONSES: dict[str, Schema] = {
    "BadRequest": error_answer("bad input: the message says what was wrong"),
    "Unauthorized": answer(ref("Unauthorized"), "missing, wrong, expired or revoked credentials"),
    "Forbidden": error_answer("a session without its X-Vectis-CSRF header on a change"),
    "NotFound": error_answer("no such object"),
    "Conflict": error_answer("the IP and port are held by another worker"),
    "GroupsFull": error_answer(
        f"the dashboard keeps {contract.GROUPS_MAX} config groups already; delete one first"
    ),
    "TooLarge": error_answer("the body is over the size cap (1 MiB; a config 512 KiB)"),
    "RateLimited": answer(
        ref("Error"), "too many failed credentials from this address", RETRY_AFTER
    ),
    "Unavailable": error_answer("the nonce store is full of unexpired nonces; retry shortly"),
    "WheelUnavailable": answer(
        ref("Error"), "the worker wheel could not be made (yet); the message says why", RETRY_AFTER
    ),
}


def responses(*names: str) -> dict[str, Schema]:
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "Conflict": "409",
        "GroupsFull": "409",
        "TooLarge": "413",
        "RateLimited": "429",
        "Unavailable": "503",
        "WheelUnavailable": "503",
    }
    return {codes[n]: {"$ref": f"#/components/responses/{n}"} for n in names}


def body_of(schema: Schema, *, required: bool = True, description: str = "") -> Schema:
    doc: Schema = {"required": required, "content": {JSON: {"schema": schema}}}
    if description:
        doc["description"] = description
    return doc


READ_AUTH: list[Schema] = [{"adminToken": []}, {"session": []}]
WRITE_AUTH: list[Schema] = [{"adminToken": []}, {"session": [], "csrf": []}]
ADMIN_READ = responses("Unauthorized", "RateLimited")
ADMIN_WRITE = responses("Unauthorized", "Forbidden", "RateLimited")


def path_param(name: str, pattern: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


WORKER_PARAM = path_param(
    "worker_id", WORKER_ID, "a worker's id; any other value answers 404 (401 on heartbeat)"
)
TOKEN_PARAM = path_param("token_id", TOKEN_ID, "a token's id; any other value answers 404")


def operation(
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


def admin_operation(
    op_id: str,
    summary: str,
    answers: dict[str, Schema],
    *,
    tag: str,
    write: bool = False,
    errors: tuple[str, ...] = (),
    body: Schema | None = None,
    parameters: list[Schema] | None = None,
) -> Schema:
    """A call of the admin token or a web session (its CSRF token on a change): `answers`,
    then the `errors` named, then the auth failures every such call may answer."""
    auth = ADMIN_WRITE if write else ADMIN_READ
    return operation(
        op_id,
        summary,
        {**answers, **responses(*errors), **auth},
        tag=tag,
        security=WRITE_AUTH if write else READ_AUTH,
        body=body,
        parameters=parameters,
    )


def text_file(media: str, description: str) -> Schema:
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


def signed_operation(
    op_id: str, summary: str, body: Schema, reply: Schema, signed: str, conflict: str = ""
) -> Schema:
    """A worker-signed call: 401 for any auth failure, the 200 answer signed back."""
    conflict = conflict or "the new IP and port are held by another worker"
    return operation(
        op_id,
        summary,
        {
            "200": answer(reply, signed, {"X-Vectis-Signature": SIGNATURE}),
            "409": error_answer(conflict),
            **responses("BadRequest", "Unauthorized", "TooLarge", "RateLimited", "Unavailable"),
        },
        tag="workers",
        security=[{"workerSignature": []}],
        parameters=[WORKER_PARAM],
        body=body_of(body),
        description="Answers only its exact raw path, without a query. The signature is "
        "checked before the body is read; 429 when this worker is over its budget of signed "
        "calls a minute (VECTIS_WORKER_CALLS_PER_MINUTE) or holds its whole share of the "
        "nonce store; 503 when the nonce store is full.",
    )


def document() -> dict[str, Any]:
    """The whole OpenAPI document as plain data."""
    from vectis.dashboard.openapi_paths import paths  # it builds on this module

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
        "paths": paths(),
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
