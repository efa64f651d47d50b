"""The SQLite store's own parts: migrations from every earlier version, files, bad files.

What every store does is the contract in tests/store/, run against SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vectis.dashboard.migrations import LATEST, migrate
from vectis.dashboard.sqlite_store import SQLiteStore
from vectis.dashboard.store import Registration, secret_hash
from vectis.errors import ConfigError

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
SECRET = "ab" * 32


def seed(db: sqlite3.Connection, version: int) -> None:
    """Rows as a dashboard at `version` would have written them."""
    if version >= 1:
        db.execute(
            "INSERT INTO workers (id, subdomain, ip, port, secret, secret_hash, version, status, "
            "last_sync, dns_status, desired_revision, config_json, applied_revision, stats_json, "
            "created_at, updated_at) VALUES ('old-fox-0001', 'old-fox-0001.z.test', '10.0.0.1', "
            "3000, ?, ?, '0.0.9', 'synced', '2026-01-01T00:00:00Z', 'synced', 2, '{\"a\":1}', 2, "
            "'{\"cpu\":1}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            (SECRET, secret_hash(SECRET)),
        )
        db.execute(
            "INSERT INTO history (worker_id, at, status, previous, cause) VALUES "
            "('old-fox-0001', '2026-01-01T00:00:00Z', 'synced', 'pending', 'sync succeeded')"
        )
        db.execute(
            "INSERT INTO tokens (id, token_hash, description, created_at, max_uses, uses) "
            "VALUES ('t1', 'h1', 'old', '2026-01-01T00:00:00Z', 5, 1)"
        )
    if version >= 2:
        db.execute("INSERT INTO meta (key, value) VALUES ('admin_token_hash', 'abc')")
    if version >= 3:
        db.execute("UPDATE workers SET hostname = 'old-box', dns_attempts = 0")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.mark.parametrize("version", range(LATEST + 1))
def test_migrates_from_every_earlier_version(tmp_path: Path, version: int) -> None:
    path = tmp_path / "data" / "dashboard.db"
    path.parent.mkdir()
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, target=version) == version
    seed(db, version)
    db.close()

    async def check() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            assert int(store.db.execute("PRAGMA user_version").fetchone()[0]) == LATEST
            assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            workers = await store.list_workers()
            tokens = await store.list_tokens()
            if version == 0:
                assert workers == [] and tokens == []
                return
            (w,) = workers
            assert (w.id, w.ip, w.status, w.desired_revision) == (
                "old-fox-0001",
                "10.0.0.1",
                "synced",
                2,
            )
            assert w.dns_attempts == 0 and w.dns_next_at == 0
            assert w.hostname == ("old-box" if version >= 3 else None)
            assert (await store.history(w.id))[0]["cause"] == "sync succeeded"
            assert tokens[0].uses == 1 and tokens[0].max_uses == 5
            meta = await store.get_meta("admin_token_hash")
            assert meta == ("abc" if version >= 2 else None)
            # The migrated store accepts new work.
            reg = Registration("10.0.0.2", 3000, "cd" * 32, None, None, None)
            new, created = await store.register(reg, "z.test", lambda: "new-owl-0002", NOW)
            assert created and new.id == "new-owl-0002"
        finally:
            await store.close()

    run(check())


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.close()
    with pytest.raises(ConfigError, match="newer than this Vectis"):
        run(SQLiteStore(path).open())


def test_garbage_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a usable Vectis database"):
        run(SQLiteStore(path).open())


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "dashboard.db"

    async def go() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    run(go())
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
