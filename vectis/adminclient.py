"""A small client for the dashboard's admin API (docs/protocol.md#admin-api): stdlib HTTP, JSON.

Every failure becomes a `VectisError` child with a message an operator can act on; the admin
token never appears in one.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from vectis.contract import GROUP_NAME_PATTERN
from vectis.dashboard_tls import client_context
from vectis.envsettings import env_text
from vectis.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unreachable,
    VectisError,
)

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
# A whole-fleet sync answers only when every worker was tried.
SYNC_ALL_TIMEOUT = 600.0
MAX_CONFIG_BYTES = 1024 * 1024

_BY_STATUS: dict[int, type[VectisError]] = {
    400: BadRequest,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def admin_token(token_file: Path | None) -> str:
    """The admin token: from `token_file` if given, else `VECTIS_ADMIN_TOKEN`."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read the admin token file {token_file}: {reason}") from None
        if not token:
            raise ConfigError(f"the admin token file {token_file} is empty")
    else:
        token = env_text(os.environ, "VECTIS_ADMIN_TOKEN") or ""
        if not token:
            raise ConfigError(
                "no admin token: set VECTIS_ADMIN_TOKEN or pass --admin-token-file FILE"
            )
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError("the admin token holds characters a token cannot have")
    return token


def parse_config(text: str, source: str) -> dict[str, Any]:
    """A worker config from JSON text: it must be one JSON object; `source` names it in errors."""
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise BadRequest(f"{source} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadRequest(f"{source} is nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{source} must hold a JSON object, not {type(value).__name__}")
    return value


class AdminClient:
    """Calls to one dashboard, authenticated with its admin token."""

    def __init__(self, url: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"dashboard URL {url!r} is not http(s)://host[:port]")
        try:
            self.port = parts.port
        except ValueError:
            raise BadRequest(f"dashboard URL {url!r} has a bad port") from None
        if parts.query or parts.fragment:
            raise BadRequest(f"dashboard URL {url!r} must not carry a query or fragment")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        missing: str | None = None,
    ) -> Any:
        """One call; the decoded JSON answer (None for an empty one), or a VectisError.

        `missing` is the message for a 404 that names nothing, e.g. "no worker 'x'".
        """
        limit = self.timeout if timeout is None else timeout
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            # The system's CAs, or VECTIS_DASHBOARD_CA's, the name checked (dashboard_tls.py).
            context = client_context(os.environ)
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=limit, context=context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=limit)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except ConnectionRefusedError:
            raise Unreachable(
                f"cannot reach the dashboard at {self.url}: connection refused"
            ) from None
        except TimeoutError:
            raise Unreachable(
                f"the dashboard at {self.url} did not answer within {limit:g} s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise Unreachable(
                f"cannot reach the dashboard at {self.url}: its TLS certificate is not trusted "
                f"({exc.verify_message}); for a private CA or a self-signed certificate, set "
                "VECTIS_DASHBOARD_CA to its PEM file"
            ) from None
        except socket.gaierror as exc:
            raise Unreachable(
                f"cannot resolve the dashboard at {self.url}: {exc.strerror}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            )
            raise Unreachable(f"cannot reach the dashboard at {self.url}: {reason}") from None
        finally:
            conn.close()
        return self._answer(method, path, status, raw, missing)

    def _answer(
        self, method: str, path: str, status: int, raw: bytes, missing: str | None = None
    ) -> Any:
        try:
            doc = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            doc = None
            if 200 <= status < 300:
                raise VectisError(
                    f"the dashboard at {self.url} answered {method} {path} with something "
                    "that is not JSON (is this a Vectis dashboard?)"
                ) from None
        if 200 <= status < 300:
            return doc
        if status == 401:
            raise Unauthorized("the dashboard refused the admin token")
        said = doc.get("message") if isinstance(doc, dict) else None
        if isinstance(said, str) and _names_something(said, status):
            message = said
        elif status == 404 and missing is not None:
            message = missing
        else:
            message = f"the dashboard answered {status} to {method} {path}"
        raise _BY_STATUS.get(status, VectisError)(message)

    # Workers.

    def list_workers(self, status: str | None = None) -> dict[str, Any]:
        query = f"?{urlencode({'status': status})}" if status else ""
        return self._object(self.request("GET", f"/infra/workers{query}"))

    def page_workers(
        self,
        *,
        status: str | None,
        q: str | None,
        limit: int,
        cursor: str | None,
        selector: str | None = None,
    ) -> dict[str, Any]:
        """One page of the admin list: `{"workers": [...], "next_cursor"}`."""
        params = {
            "limit": str(limit),
            "status": status or "",
            "q": q or "",
            "cursor": cursor or "",
            "selector": selector or "",
        }
        query = urlencode({k: v for k, v in params.items() if v})
        return self._object(self.request("GET", f"/infra/workers?{query}"))

    def summary(self, selector: str | None = None) -> dict[str, Any]:
        query = f"?{urlencode({'selector': selector})}" if selector else ""
        return self._object(self.request("GET", f"/infra/workers/summary{query}"))

    def start_sync_all(self) -> dict[str, Any]:
        """A background sync of every worker: the job, with its progress."""
        return self._object(self.request("POST", "/infra/workers/sync?background=true"))

    def job(self, job_id: str) -> dict[str, Any]:
        if not job_id.isalnum() or len(job_id) > 64:
            raise BadRequest("the dashboard answered a job id that is not one")
        return self._object(self.request("GET", f"/infra/jobs/{job_id}"))

    def get_worker(self, worker_id: str) -> dict[str, Any]:
        path = _worker_path(worker_id)
        return self._object(self.request("GET", path, missing=_no_worker(worker_id)))

    def sync_worker(self, worker_id: str) -> dict[str, Any]:
        path = _worker_path(worker_id, "/sync")
        return self._object(self.request("POST", path, missing=_no_worker(worker_id)))

    def sync_all(self, timeout: float = SYNC_ALL_TIMEOUT) -> dict[str, Any]:
        return self._object(self.request("POST", "/infra/workers/sync", timeout=timeout))

    def delete_worker(self, worker_id: str) -> Any:
        return self.request("DELETE", _worker_path(worker_id), missing=_no_worker(worker_id))

    def set_config(self, worker_id: str, config: dict[str, Any]) -> dict[str, Any]:
        path = _worker_path(worker_id, "/config")
        return self._object(self.request("PUT", path, config, missing=_no_worker(worker_id)))

    def set_labels(self, worker_id: str, labels: dict[str, str]) -> dict[str, Any]:
        path = _worker_path(worker_id, "/labels")
        return self._object(self.request("PUT", path, labels, missing=_no_worker(worker_id)))

    # Config groups.

    def list_groups(self) -> dict[str, Any]:
        return self._object(self.request("GET", "/infra/config/groups"))

    def get_group(self, name: str) -> dict[str, Any]:
        return self._object(self.request("GET", _group_path(name), missing=_no_group(name)))

    def put_group(
        self, name: str, selector: str, priority: int, config: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"selector": selector, "priority": priority, "config": config}
        return self._object(self.request("PUT", _group_path(name), body, missing=_no_group(name)))

    def delete_group(self, name: str) -> dict[str, Any]:
        return self._object(self.request("DELETE", _group_path(name), missing=_no_group(name)))

    # Enrollment tokens.

    def create_token(
        self, description: str | None, expires_in: int | None, max_uses: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if expires_in is not None:
            body["expires_in"] = expires_in
        if max_uses is not None:
            body["max_uses"] = max_uses
        return self._object(self.request("POST", "/infra/tokens", body))

    def list_tokens(self) -> dict[str, Any]:
        return self._object(self.request("GET", "/infra/tokens"))

    def revoke_token(self, token_id: str) -> Any:
        if not token_id:
            raise BadRequest("a token id cannot be empty")
        path = f"/infra/tokens/{quote(token_id, safe='')}"
        return self.request("DELETE", path, missing=f"no token {token_id[:64]!r}")

    def _object(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise VectisError(f"the dashboard at {self.url} answered an unexpected document")
        return doc


def _worker_path(worker_id: str, suffix: str = "") -> str:
    if not worker_id:
        raise BadRequest("a worker id cannot be empty")
    return f"/infra/workers/{quote(worker_id, safe='')}{suffix}"


def _no_worker(worker_id: str) -> str:
    return f"no worker {worker_id[:64]!r}"


def _group_path(name: str) -> str:
    if not re.fullmatch(GROUP_NAME_PATTERN, name):
        raise BadRequest(
            f"group name {name[:64]!r}: 1 to 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return f"/infra/config/groups/{quote(name, safe='')}"


def _no_group(name: str) -> str:
    return f"no config group {name[:64]!r}"


def _names_something(message: str, status: int) -> bool:
    """Whether the dashboard's message says more than the bare status line ("Not Found")."""
    if not message.strip():
        return False
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return True
    return message.strip().lower() != phrase.lower()
