"""PostgreSQL joins a heartbeat's write (and read) with those made meanwhile: one for all.

Each caller must still get its own outcome, as if its call ran alone: its changed rows, or
its own error (an address another worker holds), while the writes joined with it land.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.pg import PgServer
from tests.store.test_contract import NOW, reg
from vectis.dashboard.model import Changes, Worker, after_config
from vectis.dashboard.postgres_store import PostgresStore
from vectis.errors import Conflict


@pytest.fixture
async def pg(pg_server: PgServer) -> AsyncIterator[tuple[PostgresStore, PgServer, str]]:
    url = pg_server.create_database()
    store = PostgresStore(url)
    await store.open()
    try:
        yield store, pg_server, url.rsplit("/", 1)[1]
    finally:
        await store.close()


async def _workers(store: PostgresStore, n: int) -> list[Worker]:
    made = []
    for i in range(n):
        w, _ = await store.register(
            reg(i), "z.test", functools.partial("w-j-{:04x}".format, i), NOW
        )
        made.append(w)
    return made


async def test_writes_made_together_share_one_transaction(
    pg: tuple[PostgresStore, PgServer, str],
) -> None:
    store, server, db = pg
    workers = await _workers(store, 20)
    out = await asyncio.gather(
        *(store.update_workers([w.id], lambda w: after_config(w, NOW, "{}"), NOW) for w in workers)
    )
    assert [[c.id for c in changed] for changed in out] == [[w.id] for w in workers]
    assert all(changed[0].desired_revision == 1 for changed in out)
    # One transaction wrote all twenty rows: they carry one transaction id.
    assert server.psql("SELECT count(DISTINCT xmin::text) FROM workers", db).strip() == "1"


def _config(w: Worker, n: int) -> tuple[Worker, Changes]:
    return after_config(w, NOW, f'{{"n": {n}}}')


async def test_one_worker_written_by_joined_calls_gets_each_in_turn(
    pg: tuple[PostgresStore, PgServer, str],
) -> None:
    store, _, _ = pg
    (w,) = await _workers(store, 1)
    out = await asyncio.gather(
        *(store.update_workers([w.id], functools.partial(_config, n=i), NOW) for i in range(30))
    )
    assert sorted(changed[0].desired_revision for changed in out) == list(range(1, 31))
    final = await store.get_worker(w.id)
    assert final is not None and final.desired_revision == 30


async def test_a_failing_write_fails_alone(pg: tuple[PostgresStore, PgServer, str]) -> None:
    store, _, _ = pg
    a, b, *rest = await _workers(store, 8)

    def onto_a(w: Worker) -> tuple[Worker, Changes]:
        return replace(w, ip=a.ip, port=a.port), []

    def broken(w: Worker) -> None:
        raise ValueError("a mutation that fails")

    calls = [store.update_workers([b.id], onto_a, NOW), store.update_workers([a.id], broken, NOW)]
    calls += [store.update_workers([w.id], lambda w: after_config(w, NOW, "{}"), NOW) for w in rest]
    out = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(out[0], Conflict)
    assert isinstance(out[1], ValueError)
    assert [r[0].desired_revision for r in out[2:]] == [1] * len(rest)  # type: ignore[index]
    assert await store.get_worker(b.id) == b
    for w in rest:
        stored = await store.get_worker(w.id)
        assert stored is not None and stored.desired_revision == 1


async def test_reads_made_together_each_get_their_own_row(
    pg: tuple[PostgresStore, PgServer, str],
) -> None:
    store, _, _ = pg
    workers = await _workers(store, 12)
    ids = [w.id for w in workers] + ["w-j-none", workers[3].id]
    found = await asyncio.gather(*(store.get_worker(wid) for wid in ids))
    assert found == [*workers, None, workers[3]]
