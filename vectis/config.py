"""The `worker.conf` schema: parse and render plain TOML data, with errors on dotted key paths.

Pure: no file I/O here (that is `vectis.configfile`). Unknown keys are kept: `render`
starts from the document that was read and only overwrites the keys Vectis owns.

Layout of `worker.conf`::

    dashboard_url = "https://dash.example.com"   # settings, top level
    host = "0.0.0.0"
    port = 3000
    heartbeat_interval = 60
    ip_sources = ["https://api.ipify.org", ...]  # optional
    stats_mounts = ["/"]
    apply_file = "/etc/myservice/vectis.json"    # optional: where the applied config is written
    apply_command = "systemctl reload myservice"  # optional: run after writing it (/bin/sh -c)
    apply_timeout = 30                           # seconds before the command is killed

    [labels]                                     # sent at registration (vectis register --label)
    role = "edge"

    [state]                                      # registration state, written by vectis
    id = "brave-otter-3f2a"
    subdomain = "brave-otter-3f2a.fleet.example.com"
    ip = "203.0.113.5"
    sync_status = "synced"
    last_sync = "2026-11-27T12:00:00Z"
    last_error = "..."                           # absent when none
    consecutive_failures = 0
    applied_revision = 3
    reported_port = 3000                         # facts last told to the dashboard
    reported_version = "0.1.0"
    dashboard_version = "0.1.0"                  # the dashboard's, from its last answer
    pending_revision = 4                         # received, not applied yet (absent: none)
    apply_error = "exit 1: ..."                  # why the last apply failed (absent: none)
    apply_error_at = "2026-11-27T12:00:05Z"

    [config]                                     # the config the dashboard pushed (applied)

    [pending_config]                             # the config of pending_revision

    [[history]]                                  # the last status changes
    at = "..."; status = "synced"; previous = "pending"; cause = "registered"
"""

from __future__ import annotations

import copy
import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from vectis.contract import MAX_REVISION, PORT_MAX, PORT_MIN, labels_problem
from vectis.errors import ConfigError
from vectis.status import StatusChange, SyncRecord, SyncStatus

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 3000
DEFAULT_HEARTBEAT_INTERVAL = 60.0
HISTORY_LIMIT = 50
#: Seconds an apply command may run before its process group is killed.
DEFAULT_APPLY_TIMEOUT = 30.0
APPLY_TIMEOUT_RANGE = (0.1, 86400.0)
#: The longest apply_file path and apply_command text accepted.
APPLY_TEXT_MAX = 4096


@dataclass
class WorkerSettings:
    dashboard_url: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    ip_sources: list[str] | None = None
    stats_mounts: list[str] = field(default_factory=lambda: ["/"])
    apply_file: str | None = None
    apply_command: str | None = None
    apply_timeout: float = DEFAULT_APPLY_TIMEOUT


@dataclass
class WorkerState:
    id: str | None = None
    subdomain: str | None = None
    ip: str | None = None
    sync: SyncRecord = field(default_factory=SyncRecord)
    applied_revision: int = 0
    reported_port: int | None = None
    reported_version: str | None = None
    dashboard_version: str | None = None
    pending_revision: int | None = None
    apply_error: str | None = None
    apply_error_at: str | None = None


@dataclass
class WorkerConf:
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    state: WorkerState = field(default_factory=WorkerState)
    config: dict[str, Any] = field(default_factory=dict)
    pending_config: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.state.id is not None

    def record(self, change: StatusChange | None) -> None:
        """Append a status change to the history, keeping the last HISTORY_LIMIT."""
        if change is not None:
            self.history.append(change.as_dict())
            del self.history[:-HISTORY_LIMIT]


class _Reader:
    """Typed reads from a TOML table, each error naming the file and dotted key."""

    def __init__(self, source: str, table: dict[str, Any], prefix: str = "") -> None:
        self.source, self.table, self.prefix = source, table, prefix

    def fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{self.prefix}{key}': {why}")

    def sub(self, key: str) -> _Reader:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return _Reader(self.source, value, f"{self.prefix}{key}.")

    def str_(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value or None

    def int_(self, key: str, default: int | None, low: int, high: int) -> int | None:
        value = self.table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low} to {high}")
        return value

    def num(self, key: str, default: float, low: float, high: float = math.inf) -> float:
        value = self.table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            if math.isfinite(high):
                raise self.fail(key, f"must be a number from {low:g} to {high:g}")
            raise self.fail(key, f"must be a finite number of at least {low:g}")
        return float(value)

    def str_list(self, key: str) -> list[str] | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return list(value)


def toml_problem(value: Any, where: str) -> str | None:
    """Why `value` cannot be kept in worker.conf (TOML has no null), or None when it can."""
    if value is None:
        return f"{where}: null cannot be stored by a worker; leave the key out"
    items: Any = ()
    if isinstance(value, dict):
        items = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    for path, item in items:
        problem = toml_problem(item, path)
        if problem:
            return problem
    return None


def check_apply_file(value: str) -> str:
    """An absolute path for the applied config; raise ValueError otherwise."""
    if not value.startswith("/") or "\0" in value or len(value) > APPLY_TEXT_MAX:
        raise ValueError(
            f"must be an absolute path (starting with /) of at most {APPLY_TEXT_MAX} characters"
        )
    if value.endswith("/"):
        raise ValueError("must name a file, not a folder (it ends with /)")
    return value


def check_apply_command(value: str) -> str:
    """A shell command line (run by /bin/sh -c); raise ValueError otherwise."""
    if not value.strip() or "\0" in value or len(value) > APPLY_TEXT_MAX:
        raise ValueError(
            f"must be a shell command of 1 to {APPLY_TEXT_MAX} characters, without NUL"
        )
    return value


def parse_label(item: str) -> tuple[str, str]:
    """`KEY=VALUE` as (key, value) under the labels rules; raise ValueError otherwise."""
    key, eq, value = item.strip().partition("=")
    if not eq:
        raise ValueError(f"label {item[:80]!r}: write KEY=VALUE")
    key, value = key.strip(), value.strip()
    problem = labels_problem({key: value})
    if problem:
        raise ValueError(problem)
    return key, value


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (VECTIS_LABELS) as a labels object; raise ValueError otherwise."""
    labels = dict(parse_label(part) for part in text.split(",") if part.strip())
    problem = labels_problem(labels)
    if problem:
        raise ValueError(problem)
    return labels


def check_url(value: str, what: str = "URL") -> str:
    """An http(s) URL with a host; raise ValueError otherwise."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host, not {value!r}")
    return value.rstrip("/")


def parse_worker_conf(doc: dict[str, Any], source: str) -> WorkerConf:
    """Validate a parsed `worker.conf` document."""
    top = _Reader(source, doc)
    settings = WorkerSettings()
    url = top.str_("dashboard_url")
    if url is not None:
        try:
            settings.dashboard_url = check_url(url, "the dashboard URL")
        except ValueError as exc:
            raise top.fail("dashboard_url", str(exc)) from None
    settings.host = top.str_("host") or DEFAULT_HOST
    settings.port = top.int_("port", DEFAULT_PORT, PORT_MIN, PORT_MAX) or DEFAULT_PORT
    settings.heartbeat_interval = top.num("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL, 1)
    settings.ip_sources = top.str_list("ip_sources")
    settings.stats_mounts = top.str_list("stats_mounts") or ["/"]
    for key, check in (("apply_file", check_apply_file), ("apply_command", check_apply_command)):
        text = top.str_(key)
        if text is not None:
            try:
                setattr(settings, key, check(text))
            except ValueError as exc:
                raise top.fail(key, str(exc)) from None
    settings.apply_timeout = top.num("apply_timeout", DEFAULT_APPLY_TIMEOUT, *APPLY_TIMEOUT_RANGE)

    st = top.sub("state")
    state = WorkerState(id=st.str_("id"), subdomain=st.str_("subdomain"), ip=st.str_("ip"))
    if state.ip is not None:
        try:
            ipaddress.ip_address(state.ip)
        except ValueError:
            raise st.fail("ip", "must be an IPv4 or IPv6 address") from None
    status_text = st.str_("sync_status") or SyncStatus.PENDING.value
    try:
        status = SyncStatus(status_text)
    except ValueError:
        allowed = ", ".join(s.value for s in SyncStatus)
        raise st.fail("sync_status", f"must be one of {allowed}") from None
    state.sync = SyncRecord(
        status=status,
        last_sync=st.str_("last_sync"),
        last_error=st.str_("last_error"),
        consecutive_failures=st.int_("consecutive_failures", 0, 0, 2**31) or 0,
    )
    state.applied_revision = st.int_("applied_revision", 0, 0, MAX_REVISION) or 0
    state.reported_port = st.int_("reported_port", None, PORT_MIN, PORT_MAX)
    state.reported_version = st.str_("reported_version")
    state.dashboard_version = st.str_("dashboard_version")
    state.pending_revision = st.int_("pending_revision", None, 0, MAX_REVISION)
    state.apply_error = st.str_("apply_error")
    state.apply_error_at = st.str_("apply_error_at")

    config = top.sub("config").table
    pending_config = top.sub("pending_config").table if "pending_config" in doc else None
    labels = top.sub("labels").table
    problem = labels_problem(labels)
    if problem:
        raise top.fail("labels", problem)
    history = doc.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise top.fail("history", "must be an array of tables")
    return WorkerConf(
        settings,
        state,
        copy.deepcopy(config),
        copy.deepcopy(pending_config),
        dict(labels),
        copy.deepcopy(history),
        copy.deepcopy(doc),
    )


def _put(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def render_worker_conf(conf: WorkerConf) -> dict[str, Any]:
    """The TOML document for `conf`: the document read, with Vectis's keys overwritten."""
    doc = copy.deepcopy(conf.raw)
    s = conf.settings
    _put(doc, "dashboard_url", s.dashboard_url)
    doc["host"] = s.host
    doc["port"] = s.port
    hb = s.heartbeat_interval
    doc["heartbeat_interval"] = int(hb) if hb == int(hb) else hb
    _put(doc, "ip_sources", s.ip_sources)
    doc["stats_mounts"] = s.stats_mounts
    _put(doc, "apply_file", s.apply_file)
    _put(doc, "apply_command", s.apply_command)
    at = s.apply_timeout
    _put(doc, "apply_timeout", None if at == DEFAULT_APPLY_TIMEOUT else at)
    _put(doc, "labels", dict(conf.labels) or None)
    state = doc.setdefault("state", {})
    st = conf.state
    for key, value in (
        ("id", st.id),
        ("subdomain", st.subdomain),
        ("ip", st.ip),
        ("sync_status", st.sync.status.value),
        ("last_sync", st.sync.last_sync),
        ("last_error", st.sync.last_error),
        ("consecutive_failures", st.sync.consecutive_failures),
        ("applied_revision", st.applied_revision),
        ("reported_port", st.reported_port),
        ("reported_version", st.reported_version),
        ("dashboard_version", st.dashboard_version),
        ("pending_revision", st.pending_revision),
        ("apply_error", st.apply_error),
        ("apply_error_at", st.apply_error_at),
    ):
        _put(state, key, value)
    doc["config"] = copy.deepcopy(conf.config)
    _put(doc, "pending_config", copy.deepcopy(conf.pending_config))
    if conf.history:
        doc["history"] = copy.deepcopy(conf.history)
    else:
        doc.pop("history", None)
    # TOML wants plain tables before arrays of tables; tomli-w orders them itself.
    return doc
