"""The worker's calls to the dashboard: auto-registration and the signed heartbeat.

Standard library HTTP only (`urllib`), so `vectis register` and `vectis sync` never pay for
aiohttp. Every failure becomes a VectisError with a readable message; the token, the secret
and signatures never appear in one.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    AuthFailure,
    new_nonce,
    sign_request,
    verify_response,
)
from vectis.dashboard_tls import client_context
from vectis.errors import ExitCode, Unauthorized, Unreachable, VectisError

DEFAULT_TIMEOUT = 10.0
MAX_BODY = 1024 * 1024
# What the worker accepts as an id: it goes into URL paths and signatures
# (docs/protocol.md#signed-requests).
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class DashboardRefused(VectisError):
    """The dashboard answered, but not with success (or with an answer we cannot use)."""

    exit_code = ExitCode.FAILED
    http_status = 502
    code = "dashboard_refused"


class UnknownWorker(DashboardRefused):
    """The dashboard has no such worker (deleted there): only a new registration helps."""

    code = "unknown_worker"


class IdentityMismatch(DashboardRefused):
    """The heartbeat answer is not signed with this worker's secret."""

    code = "identity_mismatch"


@dataclass(frozen=True)
class Registration:
    id: str
    subdomain: str | None
    ip: str
    created: bool
    dashboard_version: str | None = None


@dataclass(frozen=True)
class HeartbeatAnswer:
    status: str | None
    revision: int | None
    config: dict[str, Any] | None
    dashboard_version: str | None = None


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """POST `body`; (status, headers, raw body) for any HTTP answer, Unreachable otherwise."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise VectisError(f"the dashboard URL must be http:// or https://, not {url!r}")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "vectis", **headers},
    )
    base = url.split("/infra/", 1)[0]
    # https: checked against the system's CAs, or VECTIS_DASHBOARD_CA's (dashboard_tls.py).
    context = client_context(os.environ) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=timeout, context=context
        ) as response:
            return response.status, dict(response.headers), response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read(MAX_BODY + 1)
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = "timed out" if isinstance(reason, TimeoutError) else str(reason)
        if isinstance(reason, ssl.SSLCertVerificationError):
            text = (
                f"its TLS certificate is not trusted ({reason.verify_message}); for a private "
                "CA or a self-signed certificate, set VECTIS_DASHBOARD_CA to its PEM file"
            )
        raise Unreachable(f"cannot reach the dashboard at {base}: {text}") from None
    except TimeoutError:
        raise Unreachable(f"cannot reach the dashboard at {base}: timed out") from None
    except OSError as exc:
        raise Unreachable(f"cannot reach the dashboard at {base}: {exc}") from None


def message(body: bytes) -> str:
    """The dashboard's own error message, if its answer carries one."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if isinstance(data, dict):
        text = data.get("message") or data.get("error")
        if isinstance(text, str):
            return ": " + text[:300]
    return ""


def _refusal(status: int, body: bytes, what: str) -> VectisError:
    detail = message(body)
    if status == 401:
        return Unauthorized(f"the dashboard refused {what} (401)")
    if status == 429:
        return DashboardRefused(
            f"the dashboard is refusing attempts from this address (429){detail}; retry later"
        )
    return DashboardRefused(f"the dashboard refused {what} ({status}){detail}")


def json_object(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise DashboardRefused(f"the dashboard's answer to {what} is too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise DashboardRefused(f"the dashboard's answer to {what} is not JSON") from None
    if not isinstance(data, dict):
        raise DashboardRefused(f"the dashboard's answer to {what} is not a JSON object")
    return data


def register(
    dashboard_url: str, token: str, payload: dict[str, Any], timeout: float = DEFAULT_TIMEOUT
) -> Registration:
    """POST /infra/workers/auto-register with a token (docs/protocol.md#registration)."""
    body = json.dumps(payload).encode("utf-8")
    status, _, raw = post(
        dashboard_url + "/infra/workers/auto-register",
        body,
        {"Authorization": f"Bearer {token}"},
        timeout,
    )
    if status not in (200, 201):
        raise _refusal(status, raw, "the enrollment token" if status == 401 else "the registration")
    data = json_object(raw, "the registration")
    worker_id, subdomain, ip = data.get("id"), data.get("subdomain"), data.get("ip")
    if not isinstance(worker_id, str) or not _ID.fullmatch(worker_id) or len(worker_id) > 63:
        raise DashboardRefused("the dashboard's registration answer has no usable id")
    if subdomain is not None and not isinstance(subdomain, str):
        raise DashboardRefused("the dashboard's registration answer has a bad subdomain")
    if not isinstance(ip, str):
        ip = str(payload.get("ip"))
    return Registration(
        worker_id, subdomain, ip, created=status == 201, dashboard_version=_version(data)
    )


def signed_post(
    dashboard_url: str,
    worker_id: str,
    route: str,
    body: bytes,
    key: bytes,
    *,
    refusal: Callable[[int, bytes], VectisError],
    answer_key: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> bytes:
    """POST `body` to `route` signed with `key`; return the answer's body once verified.

    A status other than 200 raises `refusal(status, body)`; a 200 must be signed with
    `answer_key` (default `key`) over this request's nonce, else IdentityMismatch.
    """
    path = urlsplit(dashboard_url).path.rstrip("/") + route
    nonce = new_nonce(os.urandom)
    authorization = sign_request(
        key, worker_id, "POST", path, body, ts=int(time.time()), nonce=nonce
    )
    status, headers, raw = post(
        dashboard_url + route, body, {"Authorization": authorization}, timeout
    )
    if status != 200:
        raise refusal(status, raw)
    signature = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
    try:
        verify_response(answer_key or key, worker_id, nonce, status, raw, signature)
    except AuthFailure as exc:
        raise IdentityMismatch(f"identity mismatch: {exc.reason}") from None
    return raw


def _heartbeat_refusal(status: int, raw: bytes) -> VectisError:
    if status == 401:
        return Unauthorized(
            "the dashboard refused this worker's signed heartbeat (401); if the worker was "
            "deleted there, register it again with an enrollment token"
        )
    if status == 404:
        return UnknownWorker(
            "the dashboard does not know this worker (404); register it again with an "
            "enrollment token"
        )
    return _refusal(status, raw, "the heartbeat")


def heartbeat(
    dashboard_url: str,
    worker_id: str,
    key: bytes,
    payload: dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT,
) -> HeartbeatAnswer:
    """POST the signed heartbeat (docs/protocol.md#heartbeat) and verify the signed answer."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    route = f"/infra/workers/{worker_id}/heartbeat"
    raw = signed_post(
        dashboard_url, worker_id, route, body, key, refusal=_heartbeat_refusal, timeout=timeout
    )
    data = json_object(raw, "the heartbeat")
    revision = data.get("revision")
    config = data.get("config")
    state = data.get("status")
    return HeartbeatAnswer(
        status=state if isinstance(state, str) else None,
        revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else None,
        config=config if isinstance(config, dict) else None,
        dashboard_version=_version(data),
    )


def _version(data: dict[str, Any]) -> str | None:
    """The dashboard's version from its answer (an older dashboard sends none)."""
    value = data.get("dashboard_version")
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
        return value
    return None
