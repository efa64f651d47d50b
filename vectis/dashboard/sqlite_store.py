"""The SQLite store: the embedded `Store`, with its numbered migrations.

Every SQLite call runs on one dedicated thread with one connection, so the event loop never
waits on the disk and transactions never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import operator
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from vectis.dashboard.groups import (
    ConfigGroup,
    Groups,
    check_room,
    first_config,
    group_put,
    plan,
    reconfigured,
    with_settings,
)
from vectis.dashboard.list_cache import REV_KEY, REV_QUERY, ListCache, bump
from vectis.dashboard.migrations import migrate
from vectis.dashboard.model import Changes, Token, Worker
from vectis.dashboard.selectors import Requirement, Selector, count_sql, parse
from vectis.dashboard.store import (
    HISTORY_KEEP,
    Mutation,
    Registration,
    Store,
    Summary,
    WorkerQuery,
    secret_hash,
)
from vectis.errors import ConfigError, Conflict, Unauthorized
from vectis.status import StatusChange, SyncStatus, iso

log = logging.getLogger("vectis.dashboard.store")

T = TypeVar("T")
_CHUNK = 500
_WORKER_COLUMNS = [f.name for f in fields(Worker)]
# A worker's column values in order: astuple would deep-copy each field, and a sweep stores
# thousands of workers per second on the thread the event loop shares the GIL with.
_values = operator.attrgetter(*_WORKER_COLUMNS)
_SELECT_WORKER = f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers"  # noqa: S608
_UPDATE_WORKER = (
    "UPDATE workers SET "  # noqa: S608 (column names are ours)
    + ", ".join(f"{c} = ?" for c in _WORKER_COLUMNS[1:])
    + " WHERE id = ?"
)
_INSERT_WORKER = (
    f"INSERT INTO workers ({', '.join(_WORKER_COLUMNS)}, secret_hash) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _WORKER_COLUMNS)}, ?)"
)

_MARK_SEEN = (
    "UPDATE workers SET last_sync = ?1, updated_at = ?1 "
    "WHERE id = ?2 AND (last_sync IS NULL OR last_sync < ?1)"
)

_SELECT_TOKEN = f"SELECT {', '.join(f.name for f in fields(Token))} FROM tokens"  # noqa: S608
_GROUP_COLUMNS = [f.name for f in fields(ConfigGroup)]
_SELECT_GROUP = f"SELECT {', '.join(_GROUP_COLUMNS)} FROM config_groups"  # noqa: S608


def _worker(row: Sequence[Any]) -> Worker:
    return Worker(*row)


def _token(row: Sequence[Any]) -> Token:
    return Token(*row)


def _arg(args: list[object]) -> Callable[[object], str]:
    def arg(value: object) -> str:
        args.append(value)
        return "?"

    return arg


def _where(
    db: sqlite3.Connection, selector: Selector, args: list[object], limit: int | None
) -> str:
    """`selector` as SQL over the workers table, planned (`_indexed`); its parameters
    appended to `args`."""
    return selector.sql(_arg(args), _indexed(db, selector, limit))


def _indexed(
    db: sqlite3.Connection, selector: Selector, limit: int | None
) -> tuple[Requirement, ...]:
    """The requirement to read from the labels' index, the others tested row by row; none
    when every worker is better tested in turn. SQLite keeps no statistics of labels, so
    the plan is chosen here, from counts in the index.

    The requirement that selects the fewest workers drives, unless a page of `limit` is
    wanted and even it selects many: reading n workers from the index sorts all n, while
    reading the list in its own order finds limit * total / n matches, so list order wins
    when n * n > limit * total. Counting stops at that bound.
    """
    positive = selector.positive()
    if not positive:
        return ()  # `!=` and `!key` hold for most workers: test each in list order
    bound: int | None = None
    if limit is not None:
        total = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM workers").fetchone()[0]
        bound = math.isqrt(limit * max(int(total), 1))
    counts = []
    for r in positive:
        args: list[object] = []
        cap = -1 if bound is None else bound + 1  # SQLite: a negative LIMIT is none
        (n,) = db.execute(count_sql(r, _arg(args), cap), args).fetchone()
        counts.append((n, r))
    n, fewest = min(counts, key=lambda c: c[0])
    if bound is not None and n > bound:
        return ()
    return (fewest,)


def _like_escape(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def prepare_data_dir(path: Path) -> None:
    """Create the data dir 0700 (or warn when an existing one is open to others)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the data dir ({exc.strerror})") from None
    if mode & 0o077:
        log.warning("data dir %s has mode %04o; 0700 is expected", path, mode)


class SQLiteStore(Store):
    """SQLite in WAL mode: writes on one thread; the admin list on a second, read-only one.

    WAL lets the reader see the last commit without waiting for the writer, so the list is
    not queued behind a burst of heartbeats or a sweep's batch of outcomes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectis-store")
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectis-read")
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._listing = ListCache()
        self._summary: tuple[Any, Summary] | None = None  # (workers_rev, counts), reader only
        self._touched: set[str] | None = None  # workers the open transaction wrote
        self._touched_all = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    @contextlib.contextmanager
    def _tx(self) -> Any:
        self.db.execute("BEGIN IMMEDIATE")
        self._touched, self._touched_all = None, False
        try:
            yield self.db
        except BaseException:
            self._touched = None
            self.db.execute("ROLLBACK")
            raise
        touched, self._touched = self._touched, None
        if touched is None:
            self.db.execute("COMMIT")
            return
        with self._listing.lock:  # the admin list sees this commit and its marks together
            self.db.execute("COMMIT")
            self._listing.committed(touched, self._touched_all)

    def _touch(self, ids: Iterable[str], everything: bool = False) -> None:
        """Note workers the open transaction writes, for the admin list to render again."""
        if self._touched is None:
            bump(self.db)
            self._touched = set()
        self._touched.update(ids)
        self._touched_all = self._touched_all or everything

    # -- life cycle ---------------------------------------------------------------------------

    def _open(self) -> None:
        prepare_data_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)
            os.close(fd)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{self.path}: cannot open the database ({exc})") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise ConfigError(f"{self.path}: not a usable Vectis database ({exc})") from None
        try:
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA busy_timeout=5000")
            reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            db.close()
            raise ConfigError(f"{self.path}: cannot open the database ({exc})") from None
        self._db, self._reader = db, reader

    async def open(self) -> None:
        await self._run(self._open)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._read_pool, self._close_reader)
        self._read_pool.shutdown(wait=True)
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    # -- meta ---------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        def q() -> str | None:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(q)

    async def set_meta(self, key: str, value: str) -> None:
        def q() -> None:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        await self._run(q)

    # -- workers ------------------------------------------------------------------------------

    def _holder(self, ip: str, port: int) -> str | None:
        row = self.db.execute(
            "SELECT id FROM workers WHERE ip = ? AND port = ?", (ip, port)
        ).fetchone()
        return None if row is None else str(row[0])

    def _history(self, db: sqlite3.Connection, rows: list[tuple[str, StatusChange]]) -> None:
        if not rows:
            return
        db.executemany(
            "INSERT INTO history (worker_id, at, status, previous, cause) VALUES (?, ?, ?, ?, ?)",
            [(wid, c.at, c.status.value, c.previous.value, c.cause) for wid, c in rows],
        )
        db.executemany(
            "DELETE FROM history WHERE worker_id = ? AND seq <= (SELECT seq FROM history "
            "WHERE worker_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            [(wid, wid, HISTORY_KEEP) for wid in {wid for wid, _ in rows}],
        )

    def _register(
        self, reg: Registration, zone: str, new_id: Callable[[], str], now: datetime
    ) -> tuple[Worker, bool]:
        digest = secret_hash(reg.secret)
        with self._tx() as db:
            row = db.execute(f"{_SELECT_WORKER} WHERE secret_hash = ?", (digest,)).fetchone()
            holder = self._holder(reg.ip, reg.port)
            if row is not None:
                old = _worker(row)
                if holder is not None and holder != old.id:
                    raise Conflict(f"{reg.ip} port {reg.port} is held by another worker")
                w, labels = reg.again(old, now)
                history: Changes = []
                if labels is not None:
                    self._set_labels(db, w.id, labels)
                    w, history = reconfigured(w, self._groups(db), now, "labels changed") or (w, [])
                db.execute(_UPDATE_WORKER, (*_values(w)[1:], w.id))
                self._touch([w.id])
                self._history(db, [(w.id, c) for c in history])
                return w, False
            if holder is not None:
                raise Conflict(f"{reg.ip} port {reg.port} is held by another worker")
            if reg.token_id is not None:
                used = db.execute(
                    "UPDATE tokens SET uses = uses + 1 WHERE id = ? AND revoked_at IS NULL "
                    "AND (max_uses IS NULL OR uses < max_uses) "
                    "AND (expires_at IS NULL OR expires_at > ?)",
                    (reg.token_id, iso(now)),
                ).rowcount
                if used != 1:
                    raise Unauthorized("enrollment token used up, expired or revoked")
            for _ in range(100):
                worker_id = new_id()
                if db.execute("SELECT 1 FROM workers WHERE id = ?", (worker_id,)).fetchone():
                    continue  # a collision: draw again, never reuse an ID
                w, change = reg.first(worker_id, zone, now)
                w = first_config(w, self._groups(db))
                db.execute(_INSERT_WORKER, (*_values(w), digest))
                self._set_labels(db, w.id, reg.labels or {})
                self._touch([w.id])
                self._history(db, [(w.id, change)])
                return w, True
            raise Conflict("could not draw a free worker ID; try again")

    async def register(
        self, reg: Registration, zone: str, new_id: Callable[[], str], now: datetime
    ) -> tuple[Worker, bool]:
        return await self._run(self._register, reg, zone, new_id, now)

    async def get_worker(self, worker_id: str) -> Worker | None:
        def q() -> Worker | None:
            row = self.db.execute(f"{_SELECT_WORKER} WHERE id = ?", (worker_id,)).fetchone()
            return None if row is None else _worker(row)

        return await self._run(q)

    async def list_workers(self, status: str | None = None) -> list[Worker]:
        def q() -> list[Worker]:
            if status is None:
                rows = self.db.execute(f"{_SELECT_WORKER} ORDER BY created_at, id")
            else:
                rows = self.db.execute(
                    f"{_SELECT_WORKER} WHERE status = ? ORDER BY created_at, id", (status,)
                )
            return [_worker(r) for r in rows]

        return await self._run(q)

    async def list_workers_json(self, status: str | None, dns_provisions: bool) -> bytes:
        def q() -> bytes:
            assert self._reader is not None, "store is not open"
            return self._listing.render(self._reader, status, dns_provisions)

        return await asyncio.get_running_loop().run_in_executor(self._read_pool, q)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the read-only connection, off the writer's thread."""

        def q() -> T:
            assert self._reader is not None, "store is not open"
            return fn(self._reader)

        return await asyncio.get_running_loop().run_in_executor(self._read_pool, q)

    async def page_workers(self, query: WorkerQuery) -> list[Worker]:
        return await self._read(lambda db: self._page(db, query))

    @staticmethod
    def _page(db: sqlite3.Connection, query: WorkerQuery) -> list[Worker]:
        where: list[str] = []
        args: list[object] = []
        if query.status is not None:
            where.append("status = ?")
            args.append(query.status)
        if query.dns_status is not None:
            where.append("dns_status = ?")
            args.append(query.dns_status)
        if query.after is not None:
            where.append("(created_at, id) > (?, ?)")
            args += list(query.after)
        if query.selector is not None and query.selector.requirements:
            where.append(_where(db, query.selector, args, query.limit))
        if query.q:
            pattern = "%" + _like_escape(query.q) + "%"
            where.append(
                "(id LIKE ? ESCAPE '\\' OR subdomain LIKE ? ESCAPE '\\' "
                "OR hostname LIKE ? ESCAPE '\\' OR ip LIKE ? ESCAPE '\\')"
            )
            args += [pattern] * 4
        sql = _SELECT_WORKER
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        if query.limit is not None:
            sql += " LIMIT ?"
            args.append(query.limit)
        return [_worker(r) for r in db.execute(sql, args)]

    async def summary(self, selector: Selector | None = None) -> Summary:
        """The counts, counted again only after a write to the workers (any process's): every
        open fleet page asks for them every few seconds, and at 100,000 workers a count
        takes tens of milliseconds. The counts of a selection are not kept."""
        chosen = selector if selector is not None and selector.requirements else None

        def q(db: sqlite3.Connection) -> Summary:
            db.execute("BEGIN")  # the revision and the counts from one snapshot
            try:
                rev = db.execute(REV_QUERY, (REV_KEY,)).fetchone()
                if chosen is None and self._summary is not None and self._summary[0] == rev:
                    return self._summary[1]
                by_status: dict[str, int] = {}
                by_dns: dict[str, int] = {}
                total = 0
                args: list[object] = []
                where = f" WHERE {_where(db, chosen, args, None)}" if chosen is not None else ""
                rows = db.execute(
                    "SELECT status, dns_status, COUNT(*) FROM workers"  # noqa: S608
                    f"{where} GROUP BY status, dns_status",
                    args,
                )
                for status, dns, n in rows:
                    by_status[status] = by_status.get(status, 0) + n
                    by_dns[dns] = by_dns.get(dns, 0) + n
                    total += n
                found = Summary(total, by_status, by_dns)
                if chosen is None:
                    self._summary = (rev, found)
                return found
            finally:
                db.execute("COMMIT")

        return await self._read(q)

    async def worker_secrets(self) -> dict[str, str]:
        def q() -> dict[str, str]:
            return {str(i): str(s) for i, s in self.db.execute("SELECT id, secret FROM workers")}

        return await self._run(q)

    def _update(self, ids: Sequence[str], mutate: Mutation, now: datetime) -> list[Worker]:
        changed: list[Worker] = []
        history: list[tuple[str, StatusChange]] = []
        with self._tx() as db:
            for chunk in _chunks(list(ids)):
                marks = ", ".join("?" for _ in chunk)
                rows = db.execute(f"{_SELECT_WORKER} WHERE id IN ({marks})", tuple(chunk))
                for row in rows.fetchall():
                    out = mutate(_worker(row))
                    if out is None:
                        continue
                    w, changes = out
                    changed.append(w)
                    history.extend((w.id, c) for c in changes)
            try:
                db.executemany(_UPDATE_WORKER, [(*_values(w)[1:], w.id) for w in changed])
            except sqlite3.IntegrityError:
                raise Conflict("that IP and port are held by another worker") from None
            if changed:
                self._touch(w.id for w in changed)
            self._history(db, history)
        return changed

    async def update_workers(
        self, ids: Sequence[str], mutate: Mutation, now: datetime
    ) -> list[Worker]:
        return await self._run(self._update, ids, mutate, now)

    def _rotate(self, worker_id: str, old: str, new: str, now: datetime) -> Worker | None:
        with self._tx() as db:
            row = db.execute(
                f"{_SELECT_WORKER} WHERE id = ? AND secret = ?", (worker_id, old)
            ).fetchone()
            if row is None:
                return None  # deleted, or rotated by another request meanwhile
            try:
                db.execute(
                    "UPDATE workers SET secret = ?, secret_hash = ?, updated_at = ? WHERE id = ?",
                    (new, secret_hash(new), iso(now), worker_id),
                )
            except sqlite3.IntegrityError:
                raise Conflict("that secret is held by another worker") from None
            self._touch([worker_id])
            w = replace(_worker(row), secret=new, updated_at=iso(now))
            status = SyncStatus(w.status)
            self._history(db, [(w.id, StatusChange(iso(now), status, status, "secret rotated"))])
            return w

    async def rotate_secret(
        self, worker_id: str, old: str, new: str, now: datetime
    ) -> Worker | None:
        return await self._run(self._rotate, worker_id, old, new.lower(), now)

    async def delete_worker(self, worker_id: str) -> Worker | None:
        def q() -> Worker | None:
            with self._tx() as db:
                row = db.execute(f"{_SELECT_WORKER} WHERE id = ?", (worker_id,)).fetchone()
                if row is None:
                    return None
                db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
                db.execute("DELETE FROM worker_labels WHERE worker_id = ?", (worker_id,))
                self._touch([worker_id])
                db.execute("DELETE FROM history WHERE worker_id = ?", (worker_id,))
                return _worker(row)

        return await self._run(q)

    async def history(self, worker_id: str, limit: int = 100) -> list[dict[str, str]]:
        def q() -> list[dict[str, str]]:
            rows = self.db.execute(
                "SELECT at, status, previous, cause FROM history WHERE worker_id = ? "
                "ORDER BY seq DESC LIMIT ?",
                (worker_id, limit),
            ).fetchall()
            keys = ("at", "status", "previous", "cause")
            return [dict(zip(keys, r, strict=True)) for r in reversed(rows)]

        return await self._run(q)

    async def dns_due(self, now: float, limit: int) -> list[Worker]:
        def q() -> list[Worker]:
            rows = self.db.execute(
                f"{_SELECT_WORKER} WHERE dns_status IN ('pending', 'failed') "
                "AND dns_next_at <= ? ORDER BY dns_next_at LIMIT ?",
                (now, limit),
            )
            return [_worker(r) for r in rows]

        return await self._run(q)

    async def workers_written_elsewhere(self, since: object) -> tuple[object, tuple[()] | None]:
        """SQLite's data_version of the writer's connection moves only when another
        connection commits: another process (a CLI command), never this store's writes.
        Which rows it wrote is not known: any."""

        def q() -> int:
            return int(self.db.execute("PRAGMA data_version").fetchone()[0])

        version = await self._run(q)
        return version, None if since is None or version != since else ()

    async def mark_seen(self, seen: Mapping[str, str]) -> None:
        """One UPDATE of two columns a worker: the heartbeats' grouped write of last-seen
        times, a second's worth at a time, costs no read and no rebuilt row."""

        def q() -> None:
            with self._tx() as db:
                db.executemany(_MARK_SEEN, [(at, worker_id) for worker_id, at in seen.items()])
                self._touch(seen)

        await self._run(q)

    async def rezone(self, zone: str) -> int:
        def q() -> int:
            with self._tx() as db:
                self._touch([], everything=True)
                return int(
                    db.execute(
                        "UPDATE workers SET subdomain = id || '.' || ?, dns_status = 'pending', "
                        "dns_error = NULL, dns_attempts = 0, dns_next_at = 0",
                        (zone,),
                    ).rowcount
                )

        return await self._run(q)

    async def add_dns_orphan(self, name: str, next_at: float) -> None:
        def q() -> None:
            self.db.execute(
                "INSERT OR REPLACE INTO dns_orphans (name, attempts, next_at) VALUES (?, 1, ?)",
                (name, next_at),
            )

        await self._run(q)

    async def dns_orphans_due(self, now: float, limit: int) -> list[tuple[str, int]]:
        def q() -> list[tuple[str, int]]:
            rows = self.db.execute(
                "SELECT name, attempts FROM dns_orphans WHERE next_at <= ? "
                "ORDER BY next_at LIMIT ?",
                (now, limit),
            )
            return [(str(n), int(a)) for n, a in rows]

        return await self._run(q)

    async def set_dns_orphan(self, name: str, attempts: int | None, next_at: float) -> None:
        def q() -> None:
            if attempts is None:
                self.db.execute("DELETE FROM dns_orphans WHERE name = ?", (name,))
            else:
                self.db.execute(
                    "UPDATE dns_orphans SET attempts = ?, next_at = ? WHERE name = ?",
                    (attempts, next_at, name),
                )

        await self._run(q)

    # -- labels and config groups -------------------------------------------------------------

    @staticmethod
    def _set_labels(db: sqlite3.Connection, worker_id: str, labels: dict[str, str]) -> None:
        db.execute("DELETE FROM worker_labels WHERE worker_id = ?", (worker_id,))
        db.executemany(
            "INSERT INTO worker_labels (worker_id, key, value) VALUES (?, ?, ?)",
            [(worker_id, k, v) for k, v in labels.items()],
        )

    @staticmethod
    def _group_rows(db: sqlite3.Connection) -> list[ConfigGroup]:
        return [ConfigGroup(*r) for r in db.execute(f"{_SELECT_GROUP} ORDER BY name")]

    def _groups(self, db: sqlite3.Connection) -> Groups:
        return Groups(self._group_rows(db))

    def _write(self, db: sqlite3.Connection, workers: Sequence[Worker]) -> None:
        """Store these workers' rows inside the open transaction."""
        db.executemany(_UPDATE_WORKER, [(*_values(w)[1:], w.id) for w in workers])
        if workers:
            self._touch(w.id for w in workers)

    def _reconfigure(
        self, db: sqlite3.Connection, selectors: Sequence[Selector], now: datetime, reason: str
    ) -> int:
        """Merge again the config of the workers any of `selectors` selects; how many moved."""
        groups = self._groups(db)
        args: list[object] = []
        where = " OR ".join(f"({_where(db, s, args, None)})" for s in selectors)
        rows = db.execute(f"{_SELECT_WORKER} WHERE {where} ORDER BY id", args)
        planned = plan([_worker(r) for r in rows], groups, now, reason)
        self._write(db, [w for w, _ in planned])
        self._history(db, [(w.id, c) for w, changes in planned for c in changes])
        return len(planned)

    def _settings(
        self,
        worker_id: str,
        now: datetime,
        labels: dict[str, str] | None,
        own_config_json: str | None,
    ) -> Worker | None:
        with self._tx() as db:
            row = db.execute(f"{_SELECT_WORKER} WHERE id = ?", (worker_id,)).fetchone()
            if row is None:
                return None
            w, history = with_settings(_worker(row), self._groups(db), now, labels, own_config_json)
            if labels is not None:
                self._set_labels(db, w.id, labels)
            self._write(db, [w])
            self._history(db, [(w.id, c) for c in history])
            return w

    async def set_worker_settings(
        self,
        worker_id: str,
        now: datetime,
        *,
        labels: dict[str, str] | None = None,
        own_config_json: str | None = None,
    ) -> Worker | None:
        return await self._run(self._settings, worker_id, now, labels, own_config_json)

    async def list_groups(self) -> list[ConfigGroup]:
        return await self._run(lambda: self._group_rows(self.db))

    async def get_group(self, name: str) -> ConfigGroup | None:
        def q() -> ConfigGroup | None:
            row = self.db.execute(f"{_SELECT_GROUP} WHERE name = ?", (name,)).fetchone()
            return None if row is None else ConfigGroup(*row)

        return await self._run(q)

    async def count_selected(self, selector: Selector) -> int:
        def q(db: sqlite3.Connection) -> int:
            args: list[object] = []
            sql = f"SELECT COUNT(*) FROM workers WHERE {_where(db, selector, args, None)}"  # noqa: S608
            return int(db.execute(sql, args).fetchone()[0])

        return await self._read(q)

    def _put_group(
        self, name: str, selector: str, priority: int, config_json: str, now: datetime
    ) -> tuple[ConfigGroup, bool, int]:
        with self._tx() as db:
            row = db.execute(f"{_SELECT_GROUP} WHERE name = ?", (name,)).fetchone()
            old = None if row is None else ConfigGroup(*row)
            if old is None:
                check_room(db.execute("SELECT COUNT(*) FROM config_groups").fetchone()[0])
            group, selectors = group_put(old, name, selector, priority, config_json, now)
            db.execute(
                f"INSERT OR REPLACE INTO config_groups ({', '.join(_GROUP_COLUMNS)}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?)",
                astuple(group),
            )
            moved_count = self._reconfigure(db, selectors, now, f"group {name} changed")
            return group, old is None, moved_count

    async def put_group(
        self, name: str, selector: str, priority: int, config_json: str, now: datetime
    ) -> tuple[ConfigGroup, bool, int]:
        return await self._run(self._put_group, name, selector, priority, config_json, now)

    def _delete_group(self, name: str, now: datetime) -> tuple[ConfigGroup, int] | None:
        with self._tx() as db:
            row = db.execute(f"{_SELECT_GROUP} WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            old = ConfigGroup(*row)
            db.execute("DELETE FROM config_groups WHERE name = ?", (name,))
            moved_count = self._reconfigure(db, [parse(old.selector)], now, f"group {name} deleted")
            return old, moved_count

    async def delete_group(self, name: str, now: datetime) -> tuple[ConfigGroup, int] | None:
        return await self._run(self._delete_group, name, now)

    # -- tokens -------------------------------------------------------------------------------

    async def create_token(self, token: Token) -> None:
        def q() -> None:
            self.db.execute(
                "INSERT INTO tokens (id, token_hash, description, created_at, expires_at, "
                "max_uses, uses, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                astuple(token),
            )

        await self._run(q)

    async def find_token(self, token_hash: str) -> Token | None:
        def q() -> Token | None:
            row = self.db.execute(f"{_SELECT_TOKEN} WHERE token_hash = ?", (token_hash,)).fetchone()
            return None if row is None else _token(row)

        return await self._run(q)

    async def list_tokens(self) -> list[Token]:
        def q() -> list[Token]:
            return [_token(r) for r in self.db.execute(f"{_SELECT_TOKEN} ORDER BY created_at, id")]

        return await self._run(q)

    async def revoke_token(self, token_id: str, now: datetime) -> Token | None:
        def q() -> Token | None:
            with self._tx() as db:
                db.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (iso(now), token_id),
                )
                row = db.execute(f"{_SELECT_TOKEN} WHERE id = ?", (token_id,)).fetchone()
                return None if row is None else _token(row)

        return await self._run(q)

    async def status_counts(self) -> dict[str, int]:
        def q() -> dict[str, int]:
            rows = self.db.execute("SELECT status, COUNT(*) FROM workers GROUP BY status")
            return {str(s): int(n) for s, n in rows}

        return await self._run(q)
