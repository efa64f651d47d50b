"""Pure checks of request bodies: each returns plain values or raises BadRequest.

Types, ranges, lengths and patterns come from the body's model in `schemas.py`; what no type
can say (an address's network, a secret's strength, text people read, an expiry in the past)
is checked here, on the converted model.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from vectis import contract
from vectis.addresses import Network, unicast, worker_address_problem
from vectis.config import toml_problem
from vectis.crypto.secrets import secret_problem
from vectis.dashboard import schemas
from vectis.dashboard.selectors import Selector, SelectorError, parse
from vectis.dashboard.store import WorkerQuery
from vectis.errors import BadRequest, PayloadTooLarge
from vectis.status import iso, parse_iso
from vectis.untrusted import parse_object, readable, shown

T = TypeVar("T")
CONFIG_LIMIT = contract.CONFIG_LIMIT


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


def _readable(value: str | None, field: str, limit: int) -> str | None:
    """A text people will read: no control characters (the model bounded its length)."""
    if value is None:
        return None
    try:
        return readable(value, field, limit) or None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _as(doc: dict[str, Any], model: type[T]) -> T:
    try:
        return schemas.convert(doc, model)
    except schemas.Invalid as exc:
        raise BadRequest(str(exc)) from None


def registration(
    doc: dict[str, Any], networks: tuple[Network, ...]
) -> tuple[str, int, str, str | None, str | None, str | None]:
    """(ip, port, secret, hostname, version, tls_pin) of an auto-register body."""
    body = _as(doc, schemas.RegistrationBody)
    ip = unicast_ip(body.ip, networks)
    problem = secret_problem(body.secret)
    if problem:
        raise BadRequest(f"'secret' {problem}")
    return (
        ip,
        body.port or contract.DEFAULT_WORKER_PORT,
        body.secret,
        _readable(body.hostname, "hostname", contract.HOSTNAME_MAX),
        _readable(body.version, "version", contract.VERSION_MAX),
        body.tls_pin,
    )


def heartbeat(
    doc: dict[str, Any], networks: tuple[Network, ...]
) -> tuple[str | None, int | None, str | None, int | None]:
    """(ip, port, version, applied_revision) of a heartbeat body; each may be absent."""
    body = _as(doc, schemas.HeartbeatBody)
    ip = unicast_ip(body.ip, networks) if body.ip is not None else None
    version = _readable(body.version, "version", contract.VERSION_MAX)
    return ip, body.port, version, body.applied_revision


def heartbeat_apply_error(doc: dict[str, Any]) -> str | None:
    """Why the worker's apply failed, from a heartbeat body (docs/protocol.md#heartbeat)."""
    body = _as(doc, schemas.HeartbeatBody)
    return _readable(body.apply_error, "apply_error", contract.APPLY_ERROR_MAX)


def heartbeat_pins(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """(tls_pin, tls_pin_next) of a heartbeat body (docs/protocol.md#tls); each may be absent."""
    body = _as(doc, schemas.HeartbeatBody)
    return body.tls_pin, body.tls_pin_next


def new_secret(doc: dict[str, Any]) -> str:
    """The new secret of a rotation, lower case."""
    body = _as(doc, schemas.RotationBody)
    problem = secret_problem(body.new_secret)
    if problem is not None:
        raise BadRequest(f"'new_secret' {problem}")
    return body.new_secret.lower()


def config(body: bytes) -> str:
    """A worker's desired config: a JSON object under the size cap, stored compactly."""
    if len(body) > CONFIG_LIMIT:
        raise PayloadTooLarge(f"the config is larger than {CONFIG_LIMIT // 1024} KiB")
    return _config_json(json_object(body, "the config"), "config")


def _config_json(doc: dict[str, Any], where: str) -> str:
    problem = toml_problem(doc, where)
    if problem:
        raise BadRequest(shown(problem))  # it names a key: escaped, never echoed raw
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def labels(value: Any, field: str = "labels") -> dict[str, str]:
    """A worker's labels: an object of strings under the rules of `vectis.contract`."""
    try:
        found: dict[str, str] = schemas.convert(value, schemas.Labels)
    except schemas.Invalid as exc:
        raise BadRequest(f"'{field}': {exc}") from None
    problem = contract.labels_problem(found)
    if problem:
        raise BadRequest(f"'{field}': {problem}")
    return found


def labels_body(body: bytes) -> dict[str, str]:
    """The body of `PUT /infra/workers/<id>/labels`: the labels object itself."""
    return labels(json_object(body, "the labels"))


def registration_labels(doc: dict[str, Any]) -> dict[str, str] | None:
    """The labels of an auto-register body; None when it sends none (a re-registration
    then keeps the stored ones)."""
    value = doc.get("labels")
    return None if value is None else labels(value)


def selector(text: str, field: str = "selector") -> Selector:
    """A label selector (selectors.py); a 400 that says which requirement is wrong."""
    try:
        return parse(text)
    except SelectorError as exc:
        raise BadRequest(f"'{field}': {exc}") from None


def config_group(body: bytes) -> tuple[str, int, str]:
    """(selector in canonical form, priority, config JSON) of a config group body."""
    if len(body) > CONFIG_LIMIT + contract.SELECTOR_MAX + 1024:
        raise PayloadTooLarge(f"the group's config is larger than {CONFIG_LIMIT // 1024} KiB")
    doc = _as(json_object(body, "the group"), schemas.ConfigGroupBody)
    found = selector(doc.selector)
    text = _config_json(doc.config, "config")
    if len(text.encode("utf-8")) > CONFIG_LIMIT:
        raise PayloadTooLarge(f"the group's config is larger than {CONFIG_LIMIT // 1024} KiB")
    return found.text(), doc.priority, text


def token_request(doc: dict[str, Any], now: datetime) -> tuple[str | None, str | None, int | None]:
    """(description, expires_at, max_uses) of a token creation body."""
    body = _as(doc, schemas.TokenRequest)
    description = _readable(body.description, "description", contract.DESCRIPTION_MAX)
    expires_at: str | None = None
    if body.expires_in is not None and body.expires_at is not None:
        raise BadRequest("give 'expires_in' or 'expires_at', not both")
    if body.expires_in is not None:
        expires_at = iso(now + timedelta(seconds=body.expires_in))
    elif body.expires_at is not None:
        try:
            moment = parse_iso(body.expires_at)
        except (ValueError, OverflowError):
            raise BadRequest(
                "'expires_at' must be an ISO 8601 time such as 2030-01-31T12:00:00Z"
            ) from None
        if moment <= now:
            raise BadRequest("'expires_at' is in the past")
        expires_at = iso(moment)
    return description, expires_at, body.max_uses


MAX_PAGE = 1000
_PAGING = ("limit", "cursor", "q", "dns_status", "selector")


def is_paged(params: Mapping[str, str]) -> bool:
    """Whether a list request asks for a page or a search (else: the whole list, as before)."""
    return any(name in params for name in _PAGING)


def encode_cursor(w_created_at: str, w_id: str) -> str:
    """The opaque cursor of the page after the worker (created_at, id)."""
    raw = json.dumps([w_created_at, w_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _cursor(text: str) -> tuple[str, str]:
    try:
        if len(text) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, worker_id = json.loads(raw)
        if not isinstance(created_at, str) or not isinstance(worker_id, str):
            raise ValueError
        parse_iso(created_at)
        if not re.fullmatch(contract.WORKER_ID_PATTERN, worker_id):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest("'cursor' is not a cursor this dashboard gave") from None
    return created_at, worker_id


def worker_query(params: Mapping[str, str]) -> WorkerQuery:
    """The admin list's query string: ?limit, cursor, status, dns_status, q, selector."""
    limit: int | None = None
    if "limit" in params:
        text = params["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
            raise BadRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}")
        limit = int(text)
    status = params.get("status") or None
    if status is not None and status not in contract.STATUSES:
        raise BadRequest(f"'status' must be one of {', '.join(contract.STATUSES)}")
    dns_status = params.get("dns_status") or None
    if dns_status is not None and dns_status not in contract.DNS_STATUSES:
        raise BadRequest(f"'dns_status' must be one of {', '.join(contract.DNS_STATUSES)}")
    q = _readable(params.get("q") or None, "q", 200)
    after = _cursor(params["cursor"]) if params.get("cursor") else None
    chosen = selector(params["selector"]) if params.get("selector") else None
    return WorkerQuery(
        status=status, dns_status=dns_status, q=q, after=after, limit=limit, selector=chosen
    )
