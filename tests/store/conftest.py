"""The store contract's fixtures: every test runs against SQLite and against a real PostgreSQL.

One throwaway PostgreSQL cluster serves the session (tests/pg.py); each test gets a database
of its own. `backend.make()` opens another store on the same data, as a second dashboard (or
`vectis dashboard dns check --fix`) would; `backend.execute` writes to it behind the stores'
backs, as a person with the database's own client could.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pg import PgServer
from vectis.dashboard.sqlite_store import SQLiteStore
from vectis.dashboard.store import Store

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer.start_new()
    try:
        yield server
    finally:
        server.destroy()


@dataclass
class Backend:
    name: str
    make: Callable[[], Store]
    execute: Callable[[str], None]


def _sqlite_execute(path: Path) -> Callable[[str], None]:
    def execute(sql: str) -> None:
        db = sqlite3.connect(path)
        try:
            db.execute(sql)
            db.commit()
        finally:
            db.close()

    return execute


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "data" / "dashboard.db"
        return Backend("sqlite", lambda: SQLiteStore(path), _sqlite_execute(path))
    from vectis.dashboard.postgres_store import PostgresStore

    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    database = url.rsplit("/", 1)[1]
    return Backend(
        "postgresql", lambda: PostgresStore(url), lambda sql: server.psql(sql, database) and None
    )


@asynccontextmanager
async def opened(backend: Backend) -> AsyncIterator[Store]:
    """A new store on the backend's data, open for the block."""
    s = backend.make()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with opened(backend) as s:
        yield s


@pytest.fixture
async def second(backend: Backend) -> AsyncIterator[Store]:
    """Another store on the same database: another dashboard replica (or process)."""
    async with opened(backend) as s:
        yield s
