"""Every path of the dashboard's OpenAPI document: the operations, their bodies and answers.

The building blocks and the schemas are in `openapi.py`; the schemas are the models'.
"""

from __future__ import annotations

import msgspec

from vectis.contract import DNS_STATUSES, GROUP_NAME_PATTERN, SELECTOR_MAX
from vectis.dashboard import schemas
from vectis.dashboard.openapi import (
    BOOL,
    COUNT,
    STATUSES,
    TOKEN_PARAM,
    WORKER_ID,
    WORKER_PARAM,
    Schema,
    admin_operation,
    answer,
    body_of,
    closed_object,
    operation,
    path_param,
    ref,
    responses,
    signed_operation,
    text_file,
)
from vectis.dashboard.validate import MAX_PAGE

WORKERS: Schema = {"type": "array", "items": ref("Worker")}
GROUP_PARAM = path_param(
    "name", GROUP_NAME_PATTERN, "a config group's name; any other value answers 404"
)
#: A worker's labels, as the model that checks them says.
LABELS: Schema = msgspec.json.schema(schemas.Labels)
SELECTOR_HELP = (
    "a label selector: key=value, key==value, key!=value (also true without the label), key "
    "(has the label), !key (has not), joined by commas, all of which must hold"
)
NOT_MODIFIED: Schema = {
    "description": "If-None-Match named the answer's current ETag: nothing changed (no body); "
    "every 200 here carries an ETag, so a page that polls pays only for changes"
}


def query_param(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def paths() -> dict[str, Schema]:
    worker_ops = "workers"
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "200 once the dashboard is ready; reveals nothing",
                {
                    "200": answer(
                        closed_object({"status": {"const": "ok"}}), "the dashboard is ready"
                    )
                },
                tag="open",
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                {"200": answer({"type": "object"}, "the OpenAPI document")},
                tag="open",
            )
        },
        "/infra/workers/auto-register": {
            "post": operation(
                "autoRegister",
                "Register a worker (docs/protocol.md#registration)",
                {
                    "200": answer(ref("Registered"), "the same secret registered again"),
                    "201": answer(ref("Registered"), "a new worker"),
                    **responses(
                        "BadRequest", "Unauthorized", "Conflict", "TooLarge", "RateLimited"
                    ),
                },
                tag=worker_ops,
                security=[{"enrollmentToken": []}],
                body=body_of(ref("RegistrationBody")),
                description="Identity is the secret: the same secret gets the same id back, "
                "with a changed IP stored and its DNS record moved. A DNS failure never "
                "fails a registration.",
            )
        },
        "/infra/workers/{worker_id}/heartbeat": {
            "post": signed_operation(
                "heartbeat",
                "A worker's signed heartbeat (docs/protocol.md#heartbeat)",
                ref("HeartbeatBody"),
                ref("HeartbeatAnswer"),
                "signed with the worker's secret",
            )
        },
        "/infra/workers/{worker_id}/rotate-secret": {
            "post": signed_operation(
                "rotateSecret",
                "Switch a worker to a new secret, signed with its current one",
                ref("RotationBody"),
                closed_object({"id": {"type": "string", "pattern": WORKER_ID}, "changed": BOOL}),
                "signed with the new secret, which tells the worker the switch is done; "
                "a repeat signed with the new secret naming it again answers changed: false",
                conflict="the new secret is another worker's",
            )
        },
        "/infra/workers": {
            "get": admin_operation(
                "listWorkers",
                "Every worker, or one page of a selection",
                {
                    "200": answer(
                        {"anyOf": [closed_object({"workers": WORKERS}), ref("WorkerPage")]},
                        "without limit, cursor, q, dns_status or selector: every worker (status "
                        "filters), as before; with any of them: a page and the next page's cursor",
                    ),
                    "304": NOT_MODIFIED,
                },
                tag=worker_ops,
                errors=("BadRequest",),
                parameters=[
                    query_param(
                        "status", {"enum": [*STATUSES, ""]}, "an empty value means no filter"
                    ),
                    query_param("dns_status", {"enum": [*DNS_STATUSES, ""]}, "a DNS status"),
                    query_param(
                        "q",
                        {"type": "string", "maxLength": 200},
                        "a case-insensitive part of the id, subdomain, hostname or IP",
                    ),
                    query_param(
                        "selector", {"type": "string", "maxLength": SELECTOR_MAX}, SELECTOR_HELP
                    ),
                    query_param(
                        "limit",
                        {"type": "string", "pattern": "^[0-9]{1,4}$"},
                        f"workers per page, 1 to {MAX_PAGE}; in list order (registration time)",
                    ),
                    query_param(
                        "cursor",
                        {"type": "string", "maxLength": 200},
                        "the next_cursor of the previous page: keyset paging, so that no worker "
                        "is missed or repeated while others are added, deleted or change",
                    ),
                ],
            )
        },
        "/infra/workers/summary": {
            "get": admin_operation(
                "workersSummary",
                "Counts by status and DNS status, and the total",
                {"200": answer(ref("FleetSummary"), "the counts"), "304": NOT_MODIFIED},
                tag=worker_ops,
                errors=("BadRequest",),
                parameters=[
                    query_param(
                        "selector",
                        {"type": "string", "maxLength": SELECTOR_MAX},
                        f"count only the workers it selects: {SELECTOR_HELP}",
                    )
                ],
            )
        },
        "/infra/workers/sync": {
            "post": admin_operation(
                "syncAll",
                "Sync every worker now; answers when done, or at once with a job",
                {
                    "200": answer(
                        closed_object(
                            {k: COUNT for k in ("total", "synced", "failed", "outdated")}
                        ),
                        "counts per outcome, when the sweep ends",
                    ),
                    "202": answer(
                        ref("SweepJob"),
                        "background=true: the job (the one running already, if any)",
                    ),
                },
                tag=worker_ops,
                write=True,
                errors=("BadRequest",),
                parameters=[
                    query_param(
                        "background", {"enum": ["true", "false"]}, "true: answer 202 at once"
                    )
                ],
            )
        },
        "/infra/jobs/{job_id}": {
            "get": admin_operation(
                "showJob",
                "A background sweep and how far it got",
                {"200": answer(ref("SweepJob"), "the job")},
                tag=worker_ops,
                errors=("NotFound",),
                parameters=[
                    path_param("job_id", "^[0-9a-f]{12}$", "a job's id; the last 20 jobs are kept")
                ],
            )
        },
        "/infra/workers/{worker_id}": {
            "get": admin_operation(
                "showWorker",
                "One worker with its config and history of status changes",
                {"200": answer(ref("WorkerDetail"), "the worker")},
                tag=worker_ops,
                errors=("NotFound",),
                parameters=[WORKER_PARAM],
            ),
            "delete": admin_operation(
                "deleteWorker",
                "Deregister a worker; its DNS record goes too",
                {
                    "200": answer(
                        closed_object(
                            {
                                "id": {"type": "string", "pattern": WORKER_ID},
                                "deleted": {"const": True},
                            }
                        ),
                        "deleted",
                    )
                },
                tag=worker_ops,
                write=True,
                errors=("NotFound",),
                parameters=[WORKER_PARAM],
            ),
        },
        "/infra/workers/{worker_id}/sync": {
            "post": admin_operation(
                "syncWorker",
                "Sync one worker now; answers the worker after the attempt",
                {"200": answer(ref("Worker"), "the worker; a failed attempt is its status")},
                tag=worker_ops,
                write=True,
                errors=("NotFound",),
                parameters=[WORKER_PARAM],
            )
        },
        "/infra/workers/{worker_id}/config": {
            "put": admin_operation(
                "setConfig",
                "Set a worker's own config, over its groups'; when the merge changes, a new "
                "desired revision, and the worker is outdated until it applies it",
                {"200": answer(ref("Worker"), "the worker with its desired_revision")},
                tag=worker_ops,
                write=True,
                errors=("BadRequest", "NotFound", "TooLarge"),
                parameters=[WORKER_PARAM],
                body=body_of(
                    {
                        "type": "object",
                        "additionalProperties": ref("ConfigValue"),
                    },
                    description="a JSON object of at most 512 KiB with no null anywhere",
                ),
            )
        },
        "/infra/workers/{worker_id}/labels": {
            "put": admin_operation(
                "setLabels",
                "Replace a worker's labels; the groups that select it, and so its desired "
                "config, may change",
                {"200": answer(ref("Worker"), "the worker with its labels")},
                tag=worker_ops,
                write=True,
                errors=("BadRequest", "NotFound", "TooLarge"),
                parameters=[WORKER_PARAM],
                body=body_of(LABELS, description="the labels: an object of strings"),
            )
        },
        "/infra/config/groups": {
            "get": admin_operation(
                "listGroups",
                "Every config group, by name",
                {"200": answer(ref("ConfigGroupList"), "the groups")},
                tag="groups",
            )
        },
        "/infra/config/groups/{name}": {
            "get": admin_operation(
                "showGroup",
                "One config group and how many workers it selects",
                {"200": answer(ref("ConfigGroupDetail"), "the group")},
                tag="groups",
                errors=("NotFound",),
                parameters=[GROUP_PARAM],
            ),
            "put": admin_operation(
                "putGroup",
                "Create or replace a config group; every worker whose merged config changes "
                "gets a new desired revision and is outdated until it applies it",
                {
                    "200": answer(ref("ConfigGroupChange"), "the group, replaced"),
                    "201": answer(ref("ConfigGroupChange"), "the group, created"),
                },
                tag="groups",
                write=True,
                errors=("BadRequest", "NotFound", "GroupsFull", "TooLarge"),
                parameters=[GROUP_PARAM],
                body=body_of(ref("ConfigGroupBody")),
            ),
            "delete": admin_operation(
                "deleteGroup",
                "Delete a config group; the workers it selected lose its keys",
                {"200": answer(ref("ConfigGroupChange"), "the deleted group")},
                tag="groups",
                write=True,
                errors=("NotFound",),
                parameters=[GROUP_PARAM],
            ),
        },
        "/infra/tokens": {
            "post": admin_operation(
                "createToken",
                "Create an enrollment token",
                {"201": answer(ref("NewToken"), "the token, shown once")},
                tag="tokens",
                write=True,
                errors=("BadRequest", "TooLarge"),
                body=body_of(ref("TokenRequest"), required=False),
            ),
            "get": admin_operation(
                "listTokens",
                "Every enrollment token",
                {
                    "200": answer(
                        closed_object({"tokens": {"type": "array", "items": ref("Token")}}),
                        "the tokens",
                    )
                },
                tag="tokens",
            ),
        },
        "/infra/tokens/{token_id}": {
            "delete": admin_operation(
                "revokeToken",
                "Revoke an enrollment token",
                {"200": answer(ref("Token"), "the revoked token")},
                tag="tokens",
                write=True,
                errors=("NotFound",),
                parameters=[TOKEN_PARAM],
            )
        },
        "/metrics": {
            "get": admin_operation(
                "metrics",
                "Prometheus text: workers by status, syncs, durations, registrations",
                {"200": text_file("text/plain", "Prometheus text format 0.0.4")},
                tag="admin",
            )
        },
        "/login": {
            "post": operation(
                "login",
                "Start a web session with the admin token",
                {
                    "200": answer(
                        closed_object({"csrf": {"type": "string"}}),
                        "a session cookie (HttpOnly, SameSite=Strict) and its CSRF token",
                        {"Set-Cookie": {"required": True, "schema": {"type": "string"}}},
                    ),
                    **responses("Unauthorized", "TooLarge", "RateLimited"),
                },
                tag="session",
                body=body_of(
                    {"type": "object", "properties": {"token": {"type": "string"}}},
                    description='a body that is not {"token": <admin token>} is a 401',
                ),
            )
        },
        "/logout": {
            "post": operation(
                "logout",
                "End the web session of the cookie, if any",
                {"200": answer(closed_object({"authenticated": {"const": False}}), "logged out")},
                tag="session",
            )
        },
        "/session": {
            "get": operation(
                "session",
                "Whether the cookie holds a live session, and its CSRF token",
                {
                    "200": answer(
                        {
                            "oneOf": [
                                closed_object({"authenticated": {"const": False}}),
                                closed_object(
                                    {"authenticated": {"const": True}, "csrf": {"type": "string"}}
                                ),
                            ]
                        },
                        "the session's state",
                    )
                },
                tag="session",
                parameters=[cookie()],
            )
        },
        "/": {
            "get": operation(
                "index",
                "The web page",
                {"200": text_file("text/html", "the page")},
                tag="files",
            )
        },
        "/static/{name}": {
            "get": operation(
                "static",
                "A file of the web page",
                {
                    "200": {
                        "description": "the file",
                        "content": {"*/*": {"schema": {"type": "string"}}},
                    },
                    **responses("NotFound"),
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
            "get": operation(
                "installScript",
                "The install script (docs/protocol.md#worker-builds-dist-and-installsh)",
                {
                    "200": text_file(
                        "text/x-shellscript",
                        "the script, with the worker wheel's URL and SHA-256 filled in",
                    ),
                    **responses("BadRequest", "NotFound", "WheelUnavailable"),
                },
                tag="files",
            )
        },
        "/dist/{name}": {
            "get": operation(
                "workerWheel",
                "The wheel of the vectis this dashboard runs, which its install.sh installs",
                {
                    "200": {
                        "description": "the wheel",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    **responses("NotFound", "WheelUnavailable"),
                },
                tag="files",
                parameters=[
                    path_param(
                        "name",
                        r"^vectis-[^/]+\.whl$",
                        "vectis-<version>-py3-none-any.whl of the dashboard's version; any "
                        "other name answers 404",
                    )
                ],
            )
        },
        "/dist/constraints.txt": {
            "get": operation(
                "workerConstraints",
                "The dependency versions the dashboard runs with, as pip constraints",
                {
                    "200": text_file("text/plain", "one name==version line per dependency"),
                    **responses("WheelUnavailable"),
                },
                tag="files",
            )
        },
        "/dist/worker.json": {
            "get": operation(
                "workerBuild",
                "The build workers install: version, wheel path and SHA-256, constraints",
                {
                    "200": answer(ref("DistManifest"), "the served build"),
                    **responses("WheelUnavailable"),
                },
                tag="files",
            )
        },
    }


def cookie() -> Schema:
    return {
        "name": "vectis_session",
        "in": "cookie",
        "required": False,
        "schema": {"type": "string"},
    }
