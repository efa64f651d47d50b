"""The admin list of the SQLite store: each worker rendered once by SQLite, again only on change.

SQLite renders a worker's API object (`schemas.Worker`) with json_object, splicing the
stored stats and metadata JSON, so Python never decodes them. `ListCache` keeps every
worker's rendered bytes and, on each list, re-renders only the workers written since the
previous list, in one read snapshot:

- the store's writer marks the workers each transaction changed (`touch`) and, holding
  `lock`, commits and publishes the marks (`committed`);
- the reader, holding `lock`, opens its snapshot and takes the marks, so every commit is
  either in both the snapshot and the marks, or in neither;
- every writing transaction, in any process, also adds one to `meta.workers_rev`; when the
  revision moved by more than this process's own commits, another process wrote (e.g.
  `vectis dashboard dns check --fix`) and every worker is rendered again.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable

from vectis import __version__
from vectis.dashboard import schemas

REV_KEY = "workers_rev"
_CHUNK = 500

# How SQLite renders each field of the API's worker object (`schemas.Worker`, which
# `model.worker_object` fills in Python). A stored JSON column that is not valid JSON renders
# as null, as it does there.
_FIELD_SQL = {
    "id": "id",
    "subdomain": "subdomain",
    "ip": "ip",
    "port": "port",
    "status": "status",
    "dns_status": "CASE WHEN :dns THEN dns_status ELSE 'none' END",
    "dns_error": "CASE WHEN :dns THEN dns_error END",
    "last_sync": "last_sync",
    "last_error": "last_error",
    "consecutive_failures": "consecutive_failures",
    "version": "version",
    "version_current": "json(CASE WHEN version IS NULL THEN 'null' "
    "WHEN version = :version THEN 'true' ELSE 'false' END)",
    "desired_revision": "desired_revision",
    "applied_revision": "applied_revision",
    "stats": "json(CASE WHEN json_valid(stats_json) THEN stats_json END)",
    "hostname": "hostname",
    "metadata": "json(CASE WHEN json_valid(metadata_json) THEN metadata_json END)",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "tls_pin": "tls_pin",
    "tls_pin_next": "tls_pin_next",
    "labels": "json(CASE WHEN json_valid(labels_json) THEN labels_json END)",
}
if tuple(_FIELD_SQL) != schemas.Worker.__struct_fields__:
    raise RuntimeError("list_cache._FIELD_SQL must render exactly the fields of schemas.Worker")
WORKER_OBJECT = "json_object(" + ", ".join(f"'{k}', {v}" for k, v in _FIELD_SQL.items()) + ")"
# One row for many workers: each step of a cursor hands the GIL back and forth, which costs
# milliseconds per row while the event loop is busy. The separators cannot occur inside: JSON
# escapes control characters, and ids, times and statuses are ours.
_RENDER = (
    "SELECT CAST(group_concat(id || x'1f' || created_at || x'1f' || status || x'1f' || "  # noqa: S608
    f"{WORKER_OBJECT}, x'1e') AS BLOB) FROM workers"
)
_BUMP = (
    "INSERT INTO meta (key, value) VALUES (?, '1') "
    "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
)
REV_QUERY = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?"

Row = tuple[str, str, bytes]  # created_at, status, rendered object


def bump(db: sqlite3.Connection) -> None:
    """Count one more transaction that writes workers (inside that transaction)."""
    db.execute(_BUMP, (REV_KEY,))


class ListCache:
    """Every worker's rendered object, kept current by the writer's marks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._dirty: set[str] = set()
        self._everything = False
        self._own = 0  # our transactions since the reader's last look
        self._seen_rev: int | None = None  # None: render everything next time
        self._dns: bool | None = None
        self._rows: dict[str, Row] = {}
        # The ids in list order (None: sort again), each one's place, and the objects in it.
        self._order: list[str] | None = None
        self._place: dict[str, int] = {}
        self._parts: list[bytes] = []

    # -- the writer's thread ------------------------------------------------------------------

    def committed(self, ids: Iterable[str], everything: bool = False) -> None:
        """Publish one committed transaction's changes; call holding `lock`, right after COMMIT."""
        self._dirty.update(ids)
        self._everything = self._everything or everything
        self._own += 1

    # -- the reader's thread ------------------------------------------------------------------

    def render(self, db: sqlite3.Connection, status: str | None, dns: bool) -> bytes:
        """`{"workers": [...]}` in the order (created_at, id), as UTF-8 JSON."""
        params: dict[str, int | str] = {"dns": int(dns), "version": __version__}
        db.execute("BEGIN")
        try:
            with self.lock:
                row = db.execute(REV_QUERY, (REV_KEY,)).fetchone()  # this opens the snapshot
                dirty, self._dirty = self._dirty, set()
                everything, self._everything = self._everything, False
                own, self._own = self._own, 0
            rev = int(row[0]) if row is not None and row[0] is not None else 0
            seen, self._seen_rev = self._seen_rev, None  # until this pass is complete
            updated: list[str] = []
            if everything or seen is None or dns != self._dns or rev - seen != own:
                self._rows = _rows(db.execute(_RENDER, params).fetchone())
                self._order = None
            else:
                updated = self._refresh(db, dirty, params)
        finally:
            db.execute("COMMIT")
        self._seen_rev, self._dns = rev, dns
        rows = self._rows
        if self._order is None:
            self._order = sorted(rows, key=lambda i: (rows[i][0], i))
            self._place = {i: k for k, i in enumerate(self._order)}
            self._parts = [rows[i][2] for i in self._order]
        else:
            for i in updated:
                self._parts[self._place[i]] = rows[i][2]
        if status is None:
            parts = self._parts
        else:
            parts = [r[2] for i in self._order if (r := rows[i])[1] == status]
        return b'{"workers":[' + b",".join(parts) + b"]}"

    def _refresh(
        self, db: sqlite3.Connection, ids: set[str], params: dict[str, int | str]
    ) -> list[str]:
        """Render these workers again; the ids still present (the order may be dropped)."""
        updated: list[str] = []
        pending = sorted(ids)
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            found = self._fetch(db, chunk, params)
            for i in chunk:
                row = found.get(i)
                old = self._rows.get(i)
                if row is None:
                    if old is not None:
                        del self._rows[i]
                        self._order = None
                    continue
                if old is None or old[0] != row[0]:
                    self._order = None
                self._rows[i] = row
                updated.append(i)
        return updated

    @staticmethod
    def _fetch(
        db: sqlite3.Connection, ids: list[str], params: dict[str, int | str]
    ) -> dict[str, Row]:
        """These workers rendered, by id (a deleted one is absent)."""
        named = {f"i{k}": v for k, v in enumerate(ids)}
        marks = ", ".join(f":{k}" for k in named)
        sql = f"{_RENDER} WHERE id IN ({marks})"
        return _rows(db.execute(sql, {**params, **named}).fetchone())


def _rows(found: tuple[bytes | None] | None) -> dict[str, Row]:
    """Split what `_RENDER` returned into rows by worker id."""
    blob = found[0] if found else None
    if not blob:
        return {}
    rows: dict[str, Row] = {}
    for item in blob.split(b"\x1e"):
        worker_id, created_at, status, rendered = item.split(b"\x1f", 3)
        rows[worker_id.decode()] = (created_at.decode(), status.decode(), rendered)
    return rows
