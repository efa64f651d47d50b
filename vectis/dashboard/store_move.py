"""`vectis dashboard migrate-store`: copy a SQLite registry into a PostgreSQL database.

Everything a dashboard keeps moves: each worker with its secret, labels, config and state, its
status history, the config groups, the enrollment tokens, the kept settings (the admin token's
hash, the DNS zone) and the DNS records left to delete. Workers keep their ids and secrets, so
not one registers again.

All in one transaction of the target: it holds all of it or none. Safe to run again: rows the
target holds from an earlier run are brought up to date. A target that holds anything else (a
worker or token the source does not have, a worker whose secret changed since) is refused
unless `force` is given, and then those rows are kept beside the moved ones.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vectis.dashboard.list_cache import REV_KEY
from vectis.dashboard.settings import redact_url
from vectis.errors import ConfigError, Conflict

#: Tables in the order they are copied, with the key that names a row.
_TABLES = (
    ("workers", "id"),
    ("config_groups", "name"),
    ("tokens", "id"),
    ("meta", "key"),
    ("dns_orphans", "name"),
)
#: Meta keys that describe the SQLite file itself, not the fleet.
_LOCAL_META = frozenset({REV_KEY})


@dataclass
class MoveReport:
    """What a move copied (counts by table), and what it found in the target beforehand."""

    source: str
    target: str
    workers: int = 0
    history: int = 0
    labels: int = 0
    config_groups: int = 0
    tokens: int = 0
    meta: int = 0
    dns_orphans: int = 0
    #: of the workers, how many the target held already (from an earlier run)
    workers_updated: int = 0
    #: rows of the target that did not come from the source (kept; only with force)
    foreign: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read_sqlite(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every table's columns and rows, read-only (the source is never written)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        tables = ("workers", "history", "worker_labels", "config_groups", "tokens", "meta")
        for table in (*tables, "dns_orphans"):
            order = " ORDER BY seq" if table == "history" else ""
            cur = db.execute(f"SELECT * FROM {table}{order}")  # noqa: S608 (our table names)
            columns = [d[0] for d in cur.description]
            out[table] = (columns, [tuple(r) for r in cur.fetchall()])
        return out
    finally:
        db.close()


async def _columns(conn: Any, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1",
        table,
    )
    return {str(r[0]) for r in rows}


async def move_store(sqlite_path: Path, url: str, *, force: bool = False) -> MoveReport:
    """Copy the SQLite registry at `sqlite_path` into the PostgreSQL database at `url`."""
    from vectis.dashboard.postgres_store import PostgresStore
    from vectis.dashboard.sqlite_store import SQLiteStore

    if not sqlite_path.is_file():
        raise ConfigError(f"{sqlite_path}: no SQLite registry here (is VECTIS_DATA_DIR right?)")
    # Opening it brings an older registry's schema up to date, as a dashboard's start would.
    source = SQLiteStore(sqlite_path)
    await source.open()
    await source.close()
    data = _read_sqlite(sqlite_path)
    data["meta"] = (
        data["meta"][0],
        [r for r in data["meta"][1] if r[0] not in _LOCAL_META],
    )
    report = MoveReport(source=str(sqlite_path), target=redact_url(url))
    target = PostgresStore(url, min_size=1, max_size=1)
    await target.open()  # migrates the target's schema to the latest
    try:
        async with target.pool.acquire() as conn, conn.transaction():
            await _check_target(conn, data, report)
            if report.foreign and not force:
                raise Conflict(
                    f"{report.target} holds data that is not from {sqlite_path}: "
                    + "; ".join(report.foreign[:5])
                    + ("; ..." if len(report.foreign) > 5 else "")
                    + ". Give --force to move into it anyway (those rows are kept)"
                )
            for table, key in _TABLES:
                setattr(report, table, await _upsert(conn, table, key, *data[table]))
            # The moved workers' history (in the source's order) and labels (the rows
            # selectors search) replace what the target held of them.
            history = ("worker_id", "at", "status", "previous", "cause")
            report.history = await _replace_rows(
                conn, "history", history, data["history"], data["workers"]
            )
            labels = ("worker_id", "key", "value")
            report.labels = await _replace_rows(
                conn, "worker_labels", labels, data["worker_labels"], data["workers"]
            )
    finally:
        await target.close()
    return report


async def _check_target(
    conn: Any, data: dict[str, tuple[list[str], list[tuple[Any, ...]]]], report: MoveReport
) -> None:
    """Note what the target holds that the source does not (an earlier run's rows are fine)."""
    columns, rows = data["workers"]
    id_at, secret_at = columns.index("id"), columns.index("secret")
    secrets = {r[id_at]: r[secret_at] for r in rows}
    held = await conn.fetch("SELECT id, secret FROM workers")
    for wid, secret in held:
        if wid not in secrets:
            report.foreign.append(f"worker {wid} is not in the source")
        elif secrets[wid] != secret:
            report.foreign.append(f"worker {wid} has another secret there")
        else:
            report.workers_updated += 1
    for table, key, what in (("tokens", "id", "token"), ("config_groups", "name", "config group")):
        keys_at, source_rows = data[table]
        moved = {r[keys_at.index(key)] for r in source_rows}
        for (held_key,) in await conn.fetch(f"SELECT {key} FROM {table}"):  # noqa: S608
            if held_key not in moved:
                report.foreign.append(f"{what} {held_key} is not in the source")


async def _upsert(
    conn: Any, table: str, key: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> int:
    """Insert the rows, or bring the target's rows of the same key up to date."""
    if not rows:
        return 0
    shared = [c for c in columns if c in await _columns(conn, table)]
    picks = [columns.index(c) for c in shared]
    updates = ", ".join(f"{c} = excluded.{c}" for c in shared if c != key)
    sql = (
        f"INSERT INTO {table} ({', '.join(shared)}) VALUES ({_marks(len(shared))}) "  # noqa: S608
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
    try:
        await conn.executemany(sql, [tuple(r[i] for i in picks) for r in rows])
    except Exception as exc:
        if type(exc).__name__ == "UniqueViolationError":  # asyncpg's, imported lazily
            raise Conflict(
                f"{table}: a row of the source clashes with the target's ({exc})"
            ) from None
        raise
    return len(rows)


async def _replace_rows(
    conn: Any,
    table: str,
    wanted: tuple[str, ...],
    source: tuple[list[str], list[tuple[Any, ...]]],
    workers: tuple[list[str], list[tuple[Any, ...]]],
) -> int:
    """The moved workers' rows of `table` (its `wanted` columns the source has) replace what
    the target held of them, in the source's order."""
    columns, rows = source
    ids = [r[workers[0].index("id")] for r in workers[1]]
    await conn.execute(f"DELETE FROM {table} WHERE worker_id = ANY($1::text[])", ids)  # noqa: S608
    if not rows:
        return 0
    shared = [c for c in wanted if c in columns]
    picks = [columns.index(c) for c in shared]
    await conn.executemany(
        f"INSERT INTO {table} ({', '.join(shared)}) VALUES ({_marks(len(shared))})",  # noqa: S608
        [tuple(r[i] for i in picks) for r in rows],
    )
    return len(rows)


def _marks(count: int) -> str:
    """PostgreSQL's placeholders for `count` values: $1, $2, ..."""
    return ", ".join(f"${n}" for n in range(1, count + 1))
