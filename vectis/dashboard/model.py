"""The dashboard's records and their pure transitions: no I/O, the clock passed in.

JSON columns (config, stats, metadata) stay raw text in the record and are decoded only when
a worker is rendered, so a sweep over thousands of workers never parses what it does not use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import msgspec

from vectis import __version__, sync_body
from vectis.contract import APPLY_FAILED
from vectis.dashboard import schemas
from vectis.status import (
    StatusChange,
    SyncRecord,
    SyncStatus,
    failed,
    iso,
    outdated,
    succeeded,
)

DNS_NONE = "none"
DNS_PENDING = "pending"
DNS_SYNCED = "synced"
DNS_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Worker:
    id: str
    subdomain: str
    ip: str
    port: int
    secret: str
    hostname: str | None
    version: str | None
    status: str
    last_sync: str | None
    last_error: str | None
    consecutive_failures: int
    dns_status: str
    dns_error: str | None
    dns_attempts: int
    dns_next_at: float
    desired_revision: int
    config_json: str
    applied_revision: int
    stats_json: str | None
    metadata_json: str | None
    created_at: str
    updated_at: str
    # SHA-256 (hex) of the worker's TLS public key: synced over TLS accepting that key only;
    # None: a plain-HTTP worker. `tls_pin_next` is accepted too while a key rotation is pending.
    tls_pin: str | None = None
    tls_pin_next: str | None = None
    # The worker's labels (a JSON object of strings, keys sorted) and its own config; its
    # desired config (`config_json`) is the merge of its groups' configs and its own (groups.py).
    labels_json: str = "{}"
    own_config_json: str = "{}"

    @property
    def record(self) -> SyncRecord:
        return SyncRecord(
            SyncStatus(self.status), self.last_sync, self.last_error, self.consecutive_failures
        )

    def with_record(self, rec: SyncRecord, now: datetime) -> Worker:
        return replace(
            self,
            status=rec.status.value,
            last_sync=rec.last_sync,
            last_error=rec.last_error,
            consecutive_failures=rec.consecutive_failures,
            updated_at=iso(now),
        )

    def sync_body(self) -> bytes:
        """The exact bytes POSTed to the worker's /sync: its desired revision and config."""
        return sync_body.encode(self.desired_revision, self.config_json)


def new_worker(
    worker_id: str,
    zone: str,
    ip: str,
    port: int,
    secret: str,
    hostname: str | None,
    version: str | None,
    now: datetime,
    tls_pin: str | None = None,
    labels_json: str = "{}",
) -> Worker:
    """A freshly registered worker: `pending` until first reached, its DNS record pending."""
    at = iso(now)
    return Worker(
        id=worker_id,
        subdomain=f"{worker_id}.{zone}",
        ip=ip,
        port=port,
        secret=secret,
        hostname=hostname,
        version=version,
        status=SyncStatus.PENDING.value,
        last_sync=None,
        last_error=None,
        consecutive_failures=0,
        dns_status=DNS_PENDING,
        dns_error=None,
        dns_attempts=0,
        dns_next_at=0.0,
        desired_revision=0,
        config_json="{}",
        applied_revision=0,
        stats_json=None,
        metadata_json=None,
        created_at=at,
        updated_at=at,
        tls_pin=tls_pin,
        labels_json=labels_json,
    )


Changes = list[StatusChange]


def _keep(change: StatusChange | None) -> Changes:
    return [change] if change is not None else []


def moved(w: Worker, ip: str, port: int, now: datetime) -> Worker:
    """Store a new address; a changed IP puts the DNS record back in the queue."""
    if ip == w.ip and port == w.port:
        return w
    dns = w.dns_status
    attempts, next_at = w.dns_attempts, w.dns_next_at
    if ip != w.ip:
        dns, attempts, next_at = DNS_PENDING, 0, 0.0
    return replace(
        w,
        ip=ip,
        port=port,
        dns_status=dns,
        dns_attempts=attempts,
        dns_next_at=next_at,
        updated_at=iso(now),
    )


def pinned(w: Worker, pin: str | None, pin_next: str | None, now: datetime) -> Worker:
    """The TLS pins a registration or signed heartbeat reports (docs/protocol.md#tls).

    A report without a pin keeps the stored ones: no report moves a worker back to plain HTTP.
    """
    if pin_next == pin:
        pin_next = None
    if pin is None or (pin, pin_next) == (w.tls_pin, w.tls_pin_next):
        return w
    return replace(w, tls_pin=pin, tls_pin_next=pin_next, updated_at=iso(now))


@dataclass(frozen=True, slots=True)
class SyncReply:
    """What a worker's verified 200 answer to /sync told us."""

    applied_revision: int
    version: str | None
    stats_json: str | None
    metadata_json: str | None
    #: The pin of the TLS key the worker presented, when it was its announced next one.
    tls_pin_next_seen: str | None = None
    #: The revision the worker's apply command is working on, and why its last apply failed.
    applying_revision: int | None = None
    apply_error: str | None = None


def apply_note(applied: int, desired: int, applying: int | None, error: str | None) -> str | None:
    """The `last_error` of a worker reached but behind (docs/protocol.md#statuses): its apply
    failed (`apply failed: <cause>`, `; retrying` while another attempt runs), else None."""
    if applied >= desired or error is None:
        return None
    return f"{APPLY_FAILED}: {error}" + ("; retrying" if applying is not None else "")


def after_sync(w: Worker, now: datetime, reply: SyncReply) -> tuple[Worker, Changes]:
    """A successful sync: `synced` when the worker runs the desired revision, else `outdated`.

    A worker that proved its announced next TLS key serves it now: that key is promoted and
    the old one no longer accepted (docs/protocol.md#tls-key-rotation).
    """
    if reply.tls_pin_next_seen is not None and reply.tls_pin_next_seen == w.tls_pin_next:
        w = replace(w, tls_pin=w.tls_pin_next, tls_pin_next=None)
    up_to_date = reply.applied_revision >= w.desired_revision
    cause = "sync succeeded"
    if up_to_date and w.status == SyncStatus.OUTDATED.value:
        cause = f"applied config revision {reply.applied_revision}"
    note = apply_note(
        reply.applied_revision, w.desired_revision, reply.applying_revision, reply.apply_error
    )
    rec, change = succeeded(w.record, now, up_to_date=up_to_date, cause=note or cause)
    if note is not None:
        rec = replace(rec, last_error=note)
    w = replace(
        w.with_record(rec, now),
        applied_revision=reply.applied_revision,
        version=reply.version if reply.version is not None else w.version,
        stats_json=reply.stats_json,
        metadata_json=reply.metadata_json if reply.metadata_json is not None else w.metadata_json,
    )
    return w, _keep(change)


def after_failure(w: Worker, now: datetime, cause: str) -> tuple[Worker, Changes]:
    """A failed sync: `failed`, the cause kept, the failure counted."""
    rec, change = failed(w.record, now, cause)
    return w.with_record(rec, now), _keep(change)


def after_heartbeat(
    w: Worker,
    now: datetime,
    *,
    ip: str,
    port: int,
    version: str | None,
    applied_revision: int | None,
    tls_pin: str | None = None,
    tls_pin_next: str | None = None,
    apply_error: str | None = None,
) -> tuple[Worker, Changes]:
    """A verified heartbeat is a successful exchange; it may also carry a new address or key,
    or why the worker's apply failed."""
    w = pinned(moved(w, ip, port, now), tls_pin, tls_pin_next, now)
    applied = w.applied_revision if applied_revision is None else applied_revision
    up_to_date = applied >= w.desired_revision
    note = apply_note(applied, w.desired_revision, None, apply_error)
    rec, change = succeeded(w.record, now, up_to_date=up_to_date, cause=note or "heartbeat")
    if note is not None:
        rec = replace(rec, last_error=note)
    w = replace(
        w.with_record(rec, now),
        applied_revision=applied,
        version=version if version is not None else w.version,
    )
    return w, _keep(change)


def after_config(
    w: Worker, now: datetime, config_json: str, reason: str | None = None
) -> tuple[Worker, Changes]:
    """A new desired config: the revision goes up; `outdated` until the worker applies it."""
    revision = w.desired_revision + 1
    w = replace(w, desired_revision=revision, config_json=config_json, updated_at=iso(now))
    cause = f"config revision {revision} set" + (f" ({reason})" if reason else "")
    rec, change = outdated(w.record, now, cause)
    return w.with_record(rec, now), _keep(change)


def after_dns(w: Worker, now: datetime, ok: bool, error: str | None, retry_max: float) -> Worker:
    """The outcome of one DNS attempt; failures back off exponentially up to `retry_max` s."""
    if ok:
        return replace(w, dns_status=DNS_SYNCED, dns_error=None, dns_attempts=0, dns_next_at=0.0)
    attempts = w.dns_attempts + 1
    delay = min(retry_max, 2.0 ** min(attempts, 20))
    return replace(
        w,
        dns_status=DNS_FAILED,
        dns_error=error,
        dns_attempts=attempts,
        dns_next_at=now.timestamp() + delay,
    )


_NULL = msgspec.Raw(b"null")


def _stored_json(text: str | None) -> msgspec.Raw:
    """A stored JSON column spliced into an answer as it is; null when absent or not JSON."""
    if text is None:
        return _NULL
    raw = text.encode("utf-8")
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return _NULL
    return msgspec.Raw(raw)


def worker_object(
    w: Worker, *, dns_provisions: bool = True, dashboard_version: str = __version__
) -> schemas.Worker:
    """The API's worker object (docs/protocol.md#admin-api); never the secret.

    `version_current`: whether the worker runs the dashboard's version (the one its
    install.sh installs); null until the worker reported a version.
    """
    return schemas.Worker(
        id=w.id,
        subdomain=w.subdomain,
        ip=w.ip,
        port=w.port,
        status=SyncStatus(w.status),
        dns_status=schemas.DnsStatus(w.dns_status if dns_provisions else DNS_NONE),
        dns_error=w.dns_error if dns_provisions else None,
        last_sync=w.last_sync,
        last_error=w.last_error,
        consecutive_failures=w.consecutive_failures,
        version=w.version,
        version_current=None if w.version is None else w.version == dashboard_version,
        desired_revision=w.desired_revision,
        applied_revision=w.applied_revision,
        stats=_stored_json(w.stats_json),
        hostname=w.hostname,
        metadata=_stored_json(w.metadata_json),
        created_at=w.created_at,
        updated_at=w.updated_at,
        tls_pin=w.tls_pin,
        tls_pin_next=w.tls_pin_next,
        labels=_stored_json(w.labels_json),
    )


def worker_json(
    w: Worker, *, dns_provisions: bool = True, dashboard_version: str = __version__
) -> dict[str, Any]:
    """`worker_object` as plain JSON data."""
    obj = worker_object(w, dns_provisions=dns_provisions, dashboard_version=dashboard_version)
    doc: dict[str, Any] = msgspec.json.decode(schemas.encode(obj))
    return doc


@dataclass(frozen=True, slots=True)
class Token:
    """An enrollment token; only its hash is stored."""

    id: str
    token_hash: str
    description: str | None
    created_at: str
    expires_at: str | None
    max_uses: int | None
    uses: int
    revoked_at: str | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= iso(now):
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used_up"
        return "active"


def token_json(t: Token, now: datetime) -> dict[str, Any]:
    """A token as the API lists it: never the token itself, nor its hash."""
    return {
        "id": t.id,
        "description": t.description,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "max_uses": t.max_uses,
        "uses": t.uses,
        "revoked_at": t.revoked_at,
        "state": t.state(now),
    }
