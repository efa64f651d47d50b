"""This machine's worker: settings precedence, local facts, `worker init`, `status` report.

No network library is imported here: `vectis status` and `vectis worker init` use this
module, and the daemon builds on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vectis import __version__
from vectis.addresses import unicast
from vectis.config import (
    APPLY_TIMEOUT_RANGE,
    DEFAULT_APPLY_TIMEOUT,
    DEFAULT_PORT,
    WorkerConf,
    check_apply_command,
    check_apply_file,
    check_url,
    parse_label,
    parse_labels,
)
from vectis.configfile import conf_path, locked_conf, secret_path
from vectis.contract import APPLY_FAILED
from vectis.envsettings import (
    FOREVER,
    NONCE_CAPACITY_RANGE,
    PORT_RANGE,
    check_int,
    env_bool,
    env_float,
    env_int,
    env_text,
)
from vectis.errors import BadRequest, ConfigError, ExitCode
from vectis.status import SyncStatus, outdated

MAX_BODY = 1024 * 1024
PROBE_TIMEOUT = 0.5
_WILDCARD_V4 = {"", "0.0.0.0", "*"}
_WILDCARD_V6 = {"::", "[::]"}

STATUS_EXIT = {
    SyncStatus.SYNCED: ExitCode.OK,
    SyncStatus.PENDING: ExitCode.PENDING,
    SyncStatus.FAILED: ExitCode.FAILED,
    SyncStatus.OUTDATED: ExitCode.OUTDATED,
}


@dataclass(frozen=True, slots=True)
class ApplySettings:
    """How a pushed config is applied: the file it is written to, the command run after it,
    and that command's time limit (README: applying a pushed config). Neither file nor command:
    applying a config is storing it in worker.conf, as before."""

    file: str | None = None
    command: str | None = None
    timeout: float = DEFAULT_APPLY_TIMEOUT

    @property
    def enabled(self) -> bool:
        return self.file is not None or self.command is not None


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """What `vectis worker serve` runs with, after flag > env > worker.conf > default."""

    host: str
    port: int
    ip: str | None
    nonce_capacity: int | None  # None: the signing core's default
    heartbeat_interval: float
    dashboard_url: str | None
    stats_mounts: tuple[str, ...]
    max_body: int = MAX_BODY
    access_log: bool = False  # VECTIS_ACCESS_LOG: one line per request, successes too
    apply: ApplySettings = ApplySettings()


def check_ip(value: str, what: str = "--ip") -> str:
    """A valid IPv4 or IPv6 address in its normal form; raise BadRequest otherwise."""
    try:
        return str(unicast(value.strip()))
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from None


def worker_port(env: Mapping[str, str], flag: int | None) -> int | None:
    """--port, else VECTIS_WORKER_PORT, else None (worker.conf's port then applies)."""
    if flag is not None:
        return check_int(flag, "--port", *PORT_RANGE)
    return env_int(env, "VECTIS_WORKER_PORT", None, *PORT_RANGE)


def apply_settings(conf: WorkerConf, env: Mapping[str, str]) -> ApplySettings:
    """VECTIS_APPLY_FILE, VECTIS_APPLY_COMMAND, VECTIS_APPLY_TIMEOUT over worker.conf's keys."""
    s = conf.settings
    values: dict[str, str | None] = {"file": s.apply_file, "command": s.apply_command}
    for key, name, check in (
        ("file", "VECTIS_APPLY_FILE", check_apply_file),
        ("command", "VECTIS_APPLY_COMMAND", check_apply_command),
    ):
        raw = env_text(env, name)
        if raw is not None:
            try:
                values[key] = check(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    timeout = env_float(env, "VECTIS_APPLY_TIMEOUT", None, *APPLY_TIMEOUT_RANGE)
    return ApplySettings(values["file"], values["command"], timeout or s.apply_timeout)


def labels_given(env: Mapping[str, str], flags: list[str] | None) -> dict[str, str] | None:
    """--label KEY=VALUE (repeatable), else VECTIS_LABELS (`k=v,k2=v2`); None when neither."""
    try:
        if flags:
            labels = dict(parse_label(item) for item in flags)
            return parse_labels(",".join(f"{k}={v}" for k, v in labels.items()))
        raw = env_text(env, "VECTIS_LABELS")
        return None if raw is None else parse_labels(raw)
    except ValueError as exc:
        raise ConfigError(f"{'--label' if flags else 'VECTIS_LABELS'}: {exc}") from None


def resolve_settings(
    conf: WorkerConf,
    env: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    ip: str | None = None,
) -> ServeSettings:
    """Apply the precedence flag > environment > worker.conf > default."""
    s = conf.settings
    ip_value = ip if ip is not None else env_text(env, "VECTIS_PUBLIC_IP")
    if ip_value is not None:
        ip_value = check_ip(ip_value, "--ip" if ip is not None else "VECTIS_PUBLIC_IP")
    url = env_text(env, "VECTIS_DASHBOARD_URL")
    if url is not None:
        try:
            url = check_url(url, "VECTIS_DASHBOARD_URL")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return ServeSettings(
        host=host or env_text(env, "VECTIS_WORKER_HOST") or s.host,
        port=worker_port(env, port) or s.port or DEFAULT_PORT,
        ip=ip_value,
        nonce_capacity=env_int(env, "VECTIS_NONCE_CAPACITY", None, *NONCE_CAPACITY_RANGE),
        heartbeat_interval=env_float(env, "VECTIS_HEARTBEAT_INTERVAL", None, 1, FOREVER)
        or s.heartbeat_interval,
        dashboard_url=url or s.dashboard_url,
        stats_mounts=tuple(s.stats_mounts),
        access_log=env_bool(env, "VECTIS_ACCESS_LOG"),
        apply=apply_settings(conf, env),
    )


def facts_changed(conf: WorkerConf, port: int, ip: str | None) -> str | None:
    """Why the dashboard's picture of this worker is stale (docs/protocol.md#statuses), or None."""
    st = conf.state
    if st.id is None:
        return None
    if st.reported_version is not None and st.reported_version != __version__:
        return f"version changed from {st.reported_version} to {__version__}"
    if st.reported_port is not None and st.reported_port != port:
        return f"port changed from {st.reported_port} to {port}"
    if ip is not None and st.ip is not None and st.ip != ip:
        return f"public IP changed from {st.ip} to {ip}"
    return None


def probe_address(host: str) -> str:
    """Where to knock for the daemon: loopback for a wildcard listen address."""
    host = host.strip()
    if host in _WILDCARD_V4:
        return "127.0.0.1"
    if host in _WILDCARD_V6:
        return "::1"
    return host.strip("[]")


def probe_service(
    host: str, port: int, timeout: float = PROBE_TIMEOUT, *, tls: bool = False
) -> bool:
    """Whether the daemon answers `GET /healthz` with 200 {"status": "ok"} in time.

    A plain socket and HTTP/1.0: http.client would cost `vectis status` more to import
    (email) than the whole probe takes. `tls`: the daemon serves TLS (its key is not checked:
    this asks only whether something answers on this machine's port).
    """
    import contextlib
    import json
    import socket
    import time

    deadline = time.monotonic() + timeout
    try:
        with (
            socket.create_connection((probe_address(host), port), timeout=timeout) as plain,
            _tls_client(plain) if tls else contextlib.nullcontext(plain) as sock,
        ):
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            answer = b""
            while len(answer) < 4096:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or status_line[1] != b"200":
        return False
    try:
        return bool(json.loads(body) == {"status": "ok"})
    except ValueError:
        return False


def _tls_client(sock: Any) -> Any:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock)


def status_report(conf: WorkerConf, settings: ServeSettings, running: bool) -> dict[str, Any]:
    """The fields of `vectis status` (documented in the README), from plain data."""
    st = conf.state
    record = st.sync
    why = facts_changed(conf, settings.port, settings.ip)
    if why is None and st.apply_error is not None and st.id is not None:
        # The dashboard counts this worker as behind too (docs/protocol.md#statuses).
        why = f"{APPLY_FAILED}: {st.apply_error}"
    if why is not None:
        record, _ = outdated(record, datetime.now(UTC), why)
    return {
        "id": st.id,
        "subdomain": st.subdomain,
        "ip": st.ip,
        "port": settings.port,
        "sync_status": record.status.value,
        "last_sync": record.last_sync,
        "error": record.last_error,
        "service": "running" if running else "stopped",
        "consecutive_failures": record.consecutive_failures,
        "applied_revision": st.applied_revision,
        "dashboard_url": settings.dashboard_url,
        "version": __version__,
        "dashboard_version": st.dashboard_version,
        "outdated_reason": why if record.status is SyncStatus.OUTDATED else None,
        "pending_revision": st.pending_revision,
        "apply_error": st.apply_error,
    }


def config_report(conf: WorkerConf, apply: ApplySettings) -> dict[str, Any]:
    """The fields of `vectis config show` (documented in the README), from plain data."""
    st = conf.state
    return {
        "id": st.id,
        "applied_revision": st.applied_revision,
        "config": conf.config,
        "pending_revision": st.pending_revision,
        "pending_config": conf.pending_config,
        "apply_error": st.apply_error,
        "apply_error_at": st.apply_error_at,
        "apply_file": apply.file,
        "apply_command": apply.command,
        "apply_timeout": apply.timeout,
        "labels": conf.labels,
    }


def status_exit_code(report: dict[str, Any]) -> ExitCode:
    """0 only when synced (docs/protocol.md#statuses)."""
    return STATUS_EXIT[SyncStatus(report["sync_status"])]


def init_worker(
    *,
    dashboard_url: str | None,
    port: int | None,
    host: str | None,
    env: Mapping[str, str] | None = None,
    tls: bool = True,
) -> dict[str, Any]:
    """Create the secret and the TLS key if missing, write the given settings; keep the rest.

    The TLS key (worker.tls.pem) is made once and never replaced here; `tls=False` makes none.

    A flag left out is taken from its variable in `env` (VECTIS_DASHBOARD_URL,
    VECTIS_WORKER_PORT, VECTIS_WORKER_HOST).
    """
    from vectis.crypto.secrets import create_secret_file, read_secret_file

    env = {} if env is None else env
    dashboard_url = dashboard_url or env_text(env, "VECTIS_DASHBOARD_URL")
    port = worker_port(env, port)
    host = host or env_text(env, "VECTIS_WORKER_HOST")
    if dashboard_url is not None:
        try:
            dashboard_url = check_url(dashboard_url, "--dashboard-url")
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    from vectis.worker.tls import create_tls_file, read_pin, tls_path

    secret = secret_path()
    created = create_secret_file(secret)
    read_secret_file(secret)  # an existing secret with loose permissions fails here, not later
    tls_file = tls_path(secret)
    tls_created = create_tls_file(tls_file) if tls else False
    pin = read_pin(tls_file)
    changed: dict[str, Any] = {}
    with locked_conf() as conf:
        s = conf.settings
        for key, value in (("dashboard_url", dashboard_url), ("port", port), ("host", host)):
            if value is not None and getattr(s, key) != value:
                setattr(s, key, value)
                changed[key] = value
    return {
        "secret_path": str(secret),
        "secret_created": created,
        "tls_path": str(tls_file),
        "tls_created": tls_created,
        "tls_pin": pin,
        "conf_path": str(conf_path()),
        "changed": changed,
        "registered": conf.registered,
        "sync_status": conf.state.sync.status.value,
    }
