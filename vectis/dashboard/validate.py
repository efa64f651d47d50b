"""Pure checks of request bodies: each returns plain values or raises BadRequest."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from vectis.addresses import Network, unicast, worker_address_problem
from vectis.config import toml_problem
from vectis.crypto.secrets import secret_problem
from vectis.errors import BadRequest, PayloadTooLarge
from vectis.status import iso, parse_iso
from vectis.untrusted import parse_object, readable

DEFAULT_WORKER_PORT = 3000
CONFIG_LIMIT = 512 * 1024
MAX_TEXT = 255


def json_object(body: bytes, what: str = "the body") -> dict[str, Any]:
    """Parse a JSON object from outside; anything else is a 400 that says what was wrong."""
    try:
        return parse_object(body, what)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def unicast_ip(value: Any, networks: tuple[Network, ...], field: str = "ip") -> str:
    """A worker's address in canonical form: public unicast, or inside one of `networks`."""
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadRequest(f"'{field}' must be an IP address string")
    try:
        addr = unicast(value)
    except ValueError as exc:
        raise BadRequest(f"'{field}': {exc}") from None
    problem = worker_address_problem(addr, networks)
    if problem is not None:
        raise BadRequest(f"'{field}': {problem}")
    return str(addr)


def port(value: Any, field: str = "port", default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise BadRequest(f"'{field}' must be an integer from 1 to 65535")
    return value


def text(doc: dict[str, Any], field: str, limit: int = MAX_TEXT) -> str | None:
    value = doc.get(field)
    if value is None:
        return None
    try:
        return readable(value, field, limit) or None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def registration(
    doc: dict[str, Any], networks: tuple[Network, ...]
) -> tuple[str, int, str, str | None, str | None]:
    """(ip, port, secret, hostname, version) of an auto-register body."""
    if "ip" not in doc:
        raise BadRequest("'ip' is missing")
    ip = unicast_ip(doc["ip"], networks)
    secret = doc.get("secret")
    if secret is None:
        raise BadRequest("'secret' is missing")
    problem = secret_problem(secret)
    if problem:
        raise BadRequest(f"'secret' {problem}")
    return (
        ip,
        port(doc.get("port"), default=DEFAULT_WORKER_PORT),
        str(secret),
        text(doc, "hostname"),
        text(doc, "version", 64),
    )


def heartbeat(
    doc: dict[str, Any], networks: tuple[Network, ...]
) -> tuple[str | None, int | None, str | None, int | None]:
    """(ip, port, version, applied_revision) of a heartbeat body; each may be absent."""
    ip = unicast_ip(doc["ip"], networks) if doc.get("ip") is not None else None
    p = port(doc["port"]) if doc.get("port") is not None else None
    revision = doc.get("applied_revision")
    if revision is not None and (
        isinstance(revision, bool) or not isinstance(revision, int) or not 0 <= revision < 2**62
    ):
        raise BadRequest("'applied_revision' must be a non-negative integer")
    return ip, p, text(doc, "version", 64), revision


def config(body: bytes) -> str:
    """A worker's desired config: a JSON object under the size cap, stored compactly."""
    if len(body) > CONFIG_LIMIT:
        raise PayloadTooLarge(f"the config is larger than {CONFIG_LIMIT // 1024} KiB")
    doc = json_object(body, "the config")
    problem = toml_problem(doc, "config")
    if problem:
        raise BadRequest(problem)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def token_request(doc: dict[str, Any], now: datetime) -> tuple[str | None, str | None, int | None]:
    """(description, expires_at, max_uses) of a token creation body."""
    description = text(doc, "description", 200)
    expires_at: str | None = None
    if doc.get("expires_in") is not None and doc.get("expires_at") is not None:
        raise BadRequest("give 'expires_in' or 'expires_at', not both")
    if doc.get("expires_in") is not None:
        seconds = doc["expires_in"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise BadRequest("'expires_in' must be a number of seconds")
        if not 1 <= seconds <= 10 * 365 * 86400:
            raise BadRequest("'expires_in' must be from 1 second to 10 years")
        expires_at = iso(now + timedelta(seconds=float(seconds)))
    elif doc.get("expires_at") is not None:
        value = doc["expires_at"]
        try:
            if not isinstance(value, str) or len(value) > 40:
                raise ValueError
            moment = parse_iso(value)
        except (ValueError, OverflowError):
            raise BadRequest(
                "'expires_at' must be an ISO 8601 time such as 2030-01-31T12:00:00Z"
            ) from None
        if moment <= now:
            raise BadRequest("'expires_at' is in the past")
        expires_at = iso(moment)
    max_uses = doc.get("max_uses")
    if max_uses is not None and (
        isinstance(max_uses, bool) or not isinstance(max_uses, int) or not 1 <= max_uses <= 2**31
    ):
        raise BadRequest("'max_uses' must be a positive integer")
    return description, expires_at, max_uses
