"""Settings of `vectis dashboard serve`: flags over variables over defaults.

Those that shape the wire (caps, budgets, VECTIS_WORKER_NETWORKS) are described in
docs/protocol.md#nonce-store-and-budgets and docs/protocol.md#worker-addresses; the full list
is in README, The dashboard.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vectis.addresses import Network, parse_networks
from vectis.crypto.signing import DEFAULT_NONCE_CAPACITY
from vectis.dashboard import auth
from vectis.dashboard.dist import check_wheel_file
from vectis.dashboard.sync_http import DEFAULT_KEEP_IDLE, DEFAULT_KEEP_MAX
from vectis.envsettings import (
    LISTEN_PORT_RANGE,
    NONCE_CAPACITY_RANGE,
    check_int,
    env_bool,
    env_float,
    env_int,
    env_text,
)
from vectis.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_ZONE = "vectis.internal"
DEFAULT_SYNC_INTERVAL = 60.0
DEFAULT_SYNC_CONCURRENCY = 100
DEFAULT_SYNC_TIMEOUT = 5.0
#: Event loops (threads) the syncs run on. OpenSSL's handshakes release the interpreter lock,
#: but the switches of that lock cost a second thread more than it gains on 2 cores
#: (docs/protocol.md#sync-threads): one unless the operator asks.
DEFAULT_SYNC_THREADS = 1
BODY_LIMIT = 1024 * 1024
#: Signed calls (heartbeats, rotations) one worker may make per minute; `vectis sync` may run
#: beside the daemon's own beats, so never fewer than 10.
DEFAULT_WORKER_CALLS = 30
#: Bytes of stats, and of metadata, that one worker's answer may make the dashboard keep.
DEFAULT_WORKER_STATS_LIMIT = 16 * 1024


def default_replica_name() -> str:
    """How /metrics names this dashboard when VECTIS_REPLICA_NAME is unset: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """`/var/lib/vectis` as root, else `$XDG_DATA_HOME/vectis` (`~/.local/share/vectis`)."""
    if os.geteuid() == 0:
        return Path("/var/lib/vectis")
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vectis"


@dataclass
class DashboardSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: Path("."))
    zone: str = DEFAULT_ZONE
    dns_backend: str = "none"
    #: what `create_backend` reads: the environment plus the flags as VECTIS_* names
    dns_options: dict[str, str] = field(default_factory=dict)
    admin_token: str | None = None
    new_admin_token: bool = False
    enroll_token: str | None = None
    sync_interval: float = DEFAULT_SYNC_INTERVAL
    sync_concurrency: int = DEFAULT_SYNC_CONCURRENCY
    sync_timeout: float = DEFAULT_SYNC_TIMEOUT
    sync_threads: int = DEFAULT_SYNC_THREADS
    #: VECTIS_SYNC_KEEPALIVE: seconds a connection to a worker is kept idle for its next sync
    #: (0: a new connection per sync); VECTIS_SYNC_KEEPALIVE_MAX: connections kept at most
    sync_keepalive: float = DEFAULT_KEEP_IDLE
    sync_keepalive_max: int = DEFAULT_KEEP_MAX
    nonce_capacity: int = DEFAULT_NONCE_CAPACITY
    body_limit: int = BODY_LIMIT
    #: VECTIS_WORKER_WHEEL: the wheel served to workers instead of one packed from what runs
    worker_wheel: Path | None = None
    dns_retry_max: float = 300.0
    #: seconds over which failed credentials are counted (auth.FailureLimiter)
    auth_window: float = auth.WINDOW
    #: private networks whose addresses workers may have, besides public unicast ones
    worker_networks: tuple[Network, ...] = ()
    worker_calls_per_minute: int = DEFAULT_WORKER_CALLS
    worker_stats_limit: int = DEFAULT_WORKER_STATS_LIMIT
    #: VECTIS_REQUIRE_TLS: refuse to sync a worker that has no pinned TLS key (plain HTTP)
    require_tls: bool = False
    #: VECTIS_DATABASE_URL: a postgresql:// URL (PostgreSQL store), or None (SQLite in data_dir);
    #: it may hold a password, so it is never shown (`redact_url`).
    database_url: str | None = field(default=None, repr=False)
    #: VECTIS_REPLICA_NAME: how /metrics names this dashboard process (default host-pid)
    replica_name: str = ""
    #: VECTIS_ACCESS_LOG: a line for every answered heartbeat too (else counted, summarised)
    access_log: bool = False
    #: --tls-cert/--tls-key (VECTIS_TLS_CERT/VECTIS_TLS_KEY): serve HTTPS with them; None: HTTP
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "dashboard.db"

    @property
    def store_name(self) -> str:
        """Where the data lives, fit for a log line: the redacted URL or the SQLite file."""
        return redact_url(self.database_url) if self.database_url else str(self.db_path)


DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")
_QUERY_SECRET = re.compile(r"(?i)(^|&)(password|passfile)=[^&]*")


def redact_url(url: str) -> str:
    """A database URL fit to print: a password in it (user:password@, ?password=) as ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    main, question, query = rest.partition("?")
    # As asyncpg reads it: the user information ends at the last @ before the query.
    if "@" in main:
        userinfo, _, host = main.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon:
            main = f"{user}:***@{host}"
    query = _QUERY_SECRET.sub(r"\1\2=***", query)
    return f"{scheme}{sep}{main}{question}{query}"


def _database_url(url: str | None, where: str) -> str | None:
    if url is None:
        return None
    if not url.lower().startswith(DATABASE_URL_SCHEMES):
        raise ConfigError(
            f"{where}: must be a postgresql:// (or postgres://) URL, not {redact_url(url)!r}"
        )
    return url


def _read_token_file(path: str, what: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc})") from None
    if not text:
        raise ConfigError(f"{path}: the {what} file is empty")
    return text


def _check_strength(token: str | None, where: str, what: str) -> None:
    weakness = token and auth.token_weakness(token)
    if weakness:
        raise ConfigError(
            f"{where}: the {what} is too weak: {weakness}; make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def load_settings(
    env: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: str | None = None,
    zone: str | None = None,
    dns_backend: str | None = None,
    route53_zone_id: str | None = None,
    admin_token_file: str | None = None,
    enroll_token_file: str | None = None,
    new_admin_token: bool = False,
    database_url: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> DashboardSettings:
    """Resolve every setting; raise ConfigError naming the flag or variable at fault."""
    s = DashboardSettings()
    s.host = host or env_text(env, "VECTIS_DASHBOARD_HOST") or DEFAULT_HOST
    if port is not None:
        s.port = check_int(port, "--port", *LISTEN_PORT_RANGE)
    else:
        s.port = env_int(env, "VECTIS_DASHBOARD_PORT", DEFAULT_PORT, *LISTEN_PORT_RANGE)
    s.data_dir = Path(data_dir or env_text(env, "VECTIS_DATA_DIR") or default_data_dir(env))
    if database_url:
        s.database_url = _database_url(database_url.strip(), "--database-url")
    else:
        s.database_url = _database_url(env_text(env, "VECTIS_DATABASE_URL"), "VECTIS_DATABASE_URL")
    s.zone = (zone or env_text(env, "VECTIS_ZONE") or DEFAULT_ZONE).strip().rstrip(".").lower()
    labels = s.zone.split(".")
    if not all(labels) or not all(
        len(x) <= 63 and x.replace("-", "").isalnum() and x.isascii() for x in labels
    ):
        raise ConfigError(f"zone {s.zone!r}: must be a DNS name such as fleet.example.com")
    s.dns_backend = (dns_backend or env_text(env, "VECTIS_DNS_BACKEND") or "none").strip().lower()
    options = dict(env)
    options["VECTIS_ZONE"] = s.zone
    options["VECTIS_DNS_BACKEND"] = s.dns_backend
    if route53_zone_id:
        options["VECTIS_ROUTE53_ZONE_ID"] = route53_zone_id
    s.dns_options = options
    if admin_token_file:
        s.admin_token = _read_token_file(admin_token_file, "admin token")
    else:
        s.admin_token = env_text(env, "VECTIS_ADMIN_TOKEN")
    _check_strength(s.admin_token, admin_token_file or "VECTIS_ADMIN_TOKEN", "admin token")
    s.new_admin_token = new_admin_token
    if enroll_token_file:
        s.enroll_token = _read_token_file(enroll_token_file, "enrollment token")
    else:
        s.enroll_token = env_text(env, "VECTIS_TOKEN")
    _check_strength(s.enroll_token, enroll_token_file or "VECTIS_TOKEN", "enrollment token")
    s.auth_window = env_float(env, "VECTIS_AUTH_WINDOW", auth.WINDOW, 1)
    wheel = env_text(env, "VECTIS_WORKER_WHEEL")
    s.worker_wheel = check_wheel_file(wheel) if wheel else None
    s.sync_interval = env_float(env, "VECTIS_SYNC_INTERVAL", DEFAULT_SYNC_INTERVAL, 0)
    s.sync_concurrency = env_int(
        env, "VECTIS_SYNC_CONCURRENCY", DEFAULT_SYNC_CONCURRENCY, 1, 10_000
    )
    s.sync_timeout = env_float(env, "VECTIS_SYNC_TIMEOUT", DEFAULT_SYNC_TIMEOUT, 0.05)
    s.sync_threads = env_int(env, "VECTIS_SYNC_THREADS", DEFAULT_SYNC_THREADS, 1, 16)
    s.sync_keepalive = env_float(env, "VECTIS_SYNC_KEEPALIVE", DEFAULT_KEEP_IDLE, 0, 3600)
    s.sync_keepalive_max = env_int(env, "VECTIS_SYNC_KEEPALIVE_MAX", DEFAULT_KEEP_MAX, 0, 1_000_000)
    s.nonce_capacity = env_int(
        env, "VECTIS_NONCE_CAPACITY", DEFAULT_NONCE_CAPACITY, *NONCE_CAPACITY_RANGE
    )
    try:
        s.worker_networks = parse_networks(env.get("VECTIS_WORKER_NETWORKS", ""))
    except ValueError as exc:
        raise ConfigError(f"VECTIS_WORKER_NETWORKS: {exc}") from None
    s.worker_calls_per_minute = env_int(
        env, "VECTIS_WORKER_CALLS_PER_MINUTE", DEFAULT_WORKER_CALLS, 10, 100_000
    )
    s.replica_name = env_text(env, "VECTIS_REPLICA_NAME") or default_replica_name()
    s.worker_stats_limit = env_int(
        env, "VECTIS_WORKER_STATS_LIMIT", DEFAULT_WORKER_STATS_LIMIT, 1024, 512 * 1024
    )
    s.require_tls = env_bool(env, "VECTIS_REQUIRE_TLS")
    s.access_log = env_bool(env, "VECTIS_ACCESS_LOG")
    cert = tls_cert or env_text(env, "VECTIS_TLS_CERT")
    key = tls_key or env_text(env, "VECTIS_TLS_KEY")
    if (cert is None) != (key is None):
        raise ConfigError(
            "--tls-cert (VECTIS_TLS_CERT) and --tls-key (VECTIS_TLS_KEY) go together: "
            "give both to serve HTTPS, or neither"
        )
    s.tls_cert, s.tls_key = (Path(cert), Path(key)) if cert and key else (None, None)
    return s
