"""The worker's use-cases: register with the dashboard, and sync (a signed heartbeat).

Both read worker.conf, talk to the dashboard without holding the lock, then record the
outcome in one read-modify-write under `locked_conf`. Used by
`vectis register`, `vectis sync` and the daemon's heartbeat loop.

The contract: docs/protocol.md#files-on-a-worker, docs/protocol.md#registration,
docs/protocol.md#heartbeat and docs/protocol.md#statuses.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vectis import __version__
from vectis.config import WorkerConf, check_url
from vectis.configfile import locked_conf, read_conf, secret_path, tls_file
from vectis.crypto.secrets import key_from_secret, read_secret_file
from vectis.envsettings import env_bool, env_text
from vectis.errors import BadRequest, ConfigError, ExitCode, Unauthorized, VectisError
from vectis.status import StatusChange, SyncStatus, failed, iso, succeeded
from vectis.worker import client, key_rotation, rotation, tls
from vectis.worker.host import apply_settings, labels_given, resolve_settings, worker_port
from vectis.worker.publicip import IPSettings, detect_public_ip

Clock = Callable[[], datetime]
#: Takes a revision newer than the applied one, and its config, to apply (the daemon's applier).
Offer = Callable[[int, dict[str, Any]], None]

HOW_TO_REGISTER = (
    "run 'VECTIS_TOKEN=<enrollment token> vectis register --dashboard-url <URL>' "
    "(or pass --token-file FILE)"
)


class NotRegistered(VectisError):
    """No enrollment token and no registration: the worker stays pending."""

    exit_code = ExitCode.PENDING
    code = "pending"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FlowOptions:
    """What a command or the daemon passes in; None means "use the variable or worker.conf"."""

    token: str | None = None
    dashboard_url: str | None = None
    ip: str | None = None
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    #: --label KEY=VALUE flags of `vectis register` (else VECTIS_LABELS, else worker.conf's)
    labels: list[str] | None = None
    #: With an apply file or command set, a newer revision from a heartbeat goes here; without
    #: it (`vectis sync`), the daemon applies it on its next exchange, as its own user.
    offer: Offer | None = None


@dataclass
class FlowResult:
    """The outcome of one register or sync: the state written, and the error if it failed."""

    action: str  # "register", "heartbeat" or "none"
    conf: WorkerConf
    error: VectisError | None = None
    config_applied: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return self.error.exit_code if self.error is not None else ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        """The documented `--json` document of `vectis register` and `vectis sync`."""
        st = self.conf.state
        problem = st.sync.status in (SyncStatus.FAILED, SyncStatus.OUTDATED)
        return {
            "action": self.action,
            "id": st.id,
            "subdomain": st.subdomain,
            "ip": st.ip,
            "port": st.reported_port or self.conf.settings.port,
            "version": st.reported_version,
            "dashboard_version": st.dashboard_version,
            "sync_status": st.sync.status.value,
            "last_sync": st.sync.last_sync,
            "error": st.sync.last_error if problem else None,
            "consecutive_failures": st.sync.consecutive_failures,
            "applied_revision": st.applied_revision,
            "config_applied": self.config_applied,
            "dashboard_url": self.conf.settings.dashboard_url,
            "message": self.error.message if self.error is not None else None,
        }


def read_token(token: str | None, token_file: str | None, env: Mapping[str, str]) -> str | None:
    """The enrollment token: --token-file (a path, or - for stdin), --token, VECTIS_TOKEN."""
    if token_file is not None:
        try:
            if token_file == "-":  # noqa: S105 (stdin, not a password)
                text = sys.stdin.readline()
            else:
                text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{token_file}: cannot read the enrollment token ({exc})") from None
        lines = text.strip().splitlines()
        return lines[0].strip() if lines and lines[0].strip() else None
    if token is not None and token.strip():
        return token.strip()
    return env_text(env, "VECTIS_TOKEN")


def _dashboard_url(options: FlowOptions, conf: WorkerConf) -> str | None:
    """--dashboard-url, else VECTIS_DASHBOARD_URL, else worker.conf's (validated)."""
    given = options.dashboard_url or env_text(options.env, "VECTIS_DASHBOARD_URL")
    if not given:
        return conf.settings.dashboard_url
    try:
        return check_url(given, "the dashboard URL")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _require_url(url: str | None) -> str:
    if url is None:
        raise ConfigError(
            "no dashboard URL: pass --dashboard-url or set VECTIS_DASHBOARD_URL "
            "(it is then remembered in worker.conf)"
        )
    return url


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it is not resolved here, so it is not known to be local


def check_transport(url: str, env: Mapping[str, str], what: str) -> None:
    """Refuse to send `what` over plain HTTP to a host that is not this machine.

    The enrollment token and the heartbeats would cross the network in clear; the operator
    may say so explicitly with VECTIS_ALLOW_PLAIN_HTTP=1 (docs/protocol.md#tls).
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or _loopback(parts.hostname or ""):
        return
    if env_bool(env, "VECTIS_ALLOW_PLAIN_HTTP"):
        return
    raise ConfigError(
        f"refusing to send {what} to {parts.scheme}://{parts.netloc} over plain HTTP: use the "
        "dashboard's https:// URL (README: serving the dashboard over HTTPS), or set "
        "VECTIS_ALLOW_PLAIN_HTTP=1 to send it in clear anyway"
    )


def _port(options: FlowOptions, conf: WorkerConf) -> int:
    """--port, else VECTIS_WORKER_PORT, else worker.conf's port."""
    return worker_port(options.env, options.port) or conf.settings.port


def _public_ip(options: FlowOptions, conf: WorkerConf) -> str:
    override = options.ip or env_text(options.env, "VECTIS_PUBLIC_IP")
    settings = IPSettings.from_env(options.env, conf.settings.ip_sources)
    return detect_public_ip(override, settings)


def _record_failure(
    error: VectisError, expected_id: str | None, changed: str | None, clock: Clock, action: str
) -> FlowResult:
    """Write `failed` (or `outdated` when new local facts could not be sent) with the error."""
    with locked_conf() as conf:
        if conf.state.id != expected_id:
            # Another command registered meanwhile; its state is newer than this failure.
            return FlowResult(action, conf, error)
        now = clock()
        record = conf.state.sync
        if changed and record.status in (SyncStatus.SYNCED, SyncStatus.OUTDATED):
            new = replace(
                record,
                status=SyncStatus.OUTDATED,
                last_error=error.message,
                consecutive_failures=record.consecutive_failures + 1,
            )
            cause = f"{changed}, not reported: {error.message}"
            change = None
            if new.status != record.status:
                change = StatusChange(iso(now), new.status, record.status, cause)
        else:
            new, change = failed(record, now, error.message)
        conf.state.sync = new
        conf.record(change)
    return FlowResult(action, conf, error)


def _remember_url(url: str | None) -> WorkerConf:
    with locked_conf() as conf:
        if url is not None:
            conf.settings.dashboard_url = url
    return conf


def register(options: FlowOptions, clock: Clock = _utcnow) -> FlowResult:
    """`vectis register`: enroll with the token and record the id, subdomain and IP."""
    conf = read_conf()
    url = _dashboard_url(options, conf)
    if options.token is None:
        if url is not None and url != conf.settings.dashboard_url:
            conf = _remember_url(url)
        if conf.registered:
            raise BadRequest(
                f"no enrollment token given; this worker is already registered as "
                f"{conf.state.id} ('vectis sync' needs no token)"
            )
        return FlowResult("none", conf, NotRegistered(f"not registered: {HOW_TO_REGISTER}"))
    url = _require_url(url)
    check_transport(url, options.env, "the enrollment token")
    labels = labels_given(options.env, options.labels)
    if labels is None:
        labels = conf.labels
    secret = read_secret_file(secret_path())
    port = _port(options, conf)
    previous_id = conf.state.id
    try:
        ip = _public_ip(options, conf)
        payload = {
            "ip": ip,
            "secret": secret,
            "hostname": socket.gethostname(),
            "version": __version__,
            "port": port,
        }
        pin = tls.read_pin(tls_file())
        if pin is not None:
            payload["tls_pin"] = pin
        if labels:
            payload["labels"] = labels
        reg = client.register(url, options.token, payload)
    except BadRequest:
        raise
    except VectisError as exc:
        return _record_failure(exc, previous_id, None, clock, "register")
    with locked_conf() as conf:
        if conf.state.id != reg.id:
            # A new identity on this dashboard: the config applied for another id is void.
            conf.state.applied_revision = 0
        # Remembered like the URL: the port told to the dashboard is the daemon's port.
        conf.settings.dashboard_url, conf.settings.port = url, port
        conf.labels = dict(labels)
        st = conf.state
        st.id, st.subdomain, st.ip = reg.id, reg.subdomain, reg.ip
        st.reported_port, st.reported_version = port, __version__
        st.dashboard_version = reg.dashboard_version
        cause = "registered" if reg.created else "registered again"
        st.sync, change = succeeded(st.sync, clock(), cause=cause)
        conf.record(change)
    return FlowResult("register", conf)


def _changes(conf: WorkerConf, ip: str, port: int) -> str | None:
    """What changed locally since the last report, as text (None when nothing did)."""
    st = conf.state
    parts = []
    if st.ip != ip:
        parts.append(f"ip {st.ip} -> {ip}")
    if st.reported_port != port:
        parts.append(f"port {st.reported_port} -> {port}")
    if st.reported_version != __version__:
        parts.append(f"version {st.reported_version} -> {__version__}")
    return ", ".join(parts) or None


def _heartbeat(
    url: str, worker_id: str, key: bytes, payload: dict[str, Any]
) -> client.HeartbeatAnswer:
    """The signed heartbeat; a 401 may only mean that a secret rotation moved on."""
    try:
        return client.heartbeat(url, worker_id, key, payload)
    except Unauthorized as refused:
        try:
            answer = rotation.heartbeat_after_refusal(url, worker_id, key, payload, secret_path())
        except VectisError:
            answer = None
        if answer is None:
            raise refused from None
        return answer


def sync(options: FlowOptions, clock: Clock = _utcnow) -> FlowResult:
    """`vectis sync`: register when needed and possible, else one signed heartbeat."""
    conf = read_conf()
    if not conf.registered:
        if options.token is not None:
            return register(options, clock)
        return FlowResult("none", conf, NotRegistered(f"not registered: {HOW_TO_REGISTER}"))
    url = _require_url(_dashboard_url(options, conf))
    check_transport(url, options.env, "a heartbeat")
    key = key_from_secret(read_secret_file(secret_path()))
    port = _port(options, conf)
    worker_id = conf.state.id
    assert worker_id is not None
    try:
        ip = _public_ip(options, conf)
    except BadRequest:
        raise
    except VectisError as exc:
        return _record_failure(exc, worker_id, None, clock, "heartbeat")
    changed = _changes(conf, ip, port)
    payload = {
        "ip": ip,
        "version": __version__,
        "port": port,
        "applied_revision": conf.state.applied_revision,
        "apply_error": conf.state.apply_error,
        **tls.reported_pins(tls_file()),
    }
    applies = apply_settings(conf, options.env).enabled
    offered: tuple[int, dict[str, Any]] | None = None
    try:
        answer = _heartbeat(url, worker_id, key, payload)
    except (Unauthorized, client.UnknownWorker) as exc:
        if options.token is not None:
            return register(options, clock)
        return _record_failure(exc, worker_id, changed, clock, "heartbeat")
    except VectisError as exc:
        return _record_failure(exc, worker_id, changed, clock, "heartbeat")
    applied = False
    with locked_conf() as conf:
        if conf.state.id != worker_id:
            return FlowResult("heartbeat", conf)
        st = conf.state
        if (
            answer.revision is not None
            and answer.config is not None
            and answer.revision > st.applied_revision
        ):
            if applies:
                offered = (answer.revision, answer.config)
            else:
                conf.config, st.applied_revision, applied = answer.config, answer.revision, True
        conf.settings.dashboard_url, conf.settings.port = url, port
        st.ip, st.reported_port, st.reported_version = ip, port, __version__
        st.dashboard_version = answer.dashboard_version
        cause = f"heartbeat ({changed})" if changed else "heartbeat"
        st.sync, change = succeeded(st.sync, clock(), cause=cause)
        conf.record(change)
    if offered is not None and options.offer is not None:
        options.offer(*offered)
    return FlowResult("heartbeat", conf, config_applied=applied)


def _rotating(options: FlowOptions, unregistered: str, sent: str) -> tuple[WorkerConf, str, str]:
    """A rotation's worker.conf, the worker's id and the dashboard's URL, the URL's transport
    checked for what is `sent`; `unregistered` says why there is nothing to rotate."""
    conf = read_conf()
    if not conf.registered or conf.state.id is None:
        raise NotRegistered(f"not registered, so {unregistered}: {HOW_TO_REGISTER}")
    url = _require_url(_dashboard_url(options, conf))
    check_transport(url, options.env, sent)
    return conf, conf.state.id, url


def rotate_secret(options: FlowOptions) -> rotation.RotationResult:
    """`vectis rotate-secret`: a new secret, switched on the dashboard first, then here."""
    _, worker_id, url = _rotating(options, "there is no secret to rotate", "a new secret")
    return rotation.rotate(url, worker_id, secret_path())


def rotate_tls_key(options: FlowOptions) -> key_rotation.KeyRotationResult:
    """`vectis rotate-tls-key`: a new TLS key, announced, served, then the old one retired."""
    conf, worker_id, url = _rotating(options, "no key is pinned to rotate", "a heartbeat")
    daemon = resolve_settings(conf, options.env, port=options.port)
    beat = replace(options, token=None, dashboard_url=url)

    def announce() -> VectisError | None:
        return sync(beat).error

    return key_rotation.rotate(worker_id, tls_file(), announce, (daemon.host, daemon.port))
