"""The nonce ledger replicas share on PostgreSQL: batched checks and inserts, one outcome each.

Many calls at once land in one statement (call_batches.py); each must still get
its own outcome: stored, a replay, its worker's share full, or the store full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.pg import PgServer
from vectis.crypto.signing import NonceShareFull, NonceStoreFull
from vectis.dashboard import postgres_replicas
from vectis.dashboard.postgres_replicas import PgNonces
from vectis.dashboard.postgres_store import PostgresStore


@pytest.fixture
async def two(pg_server: PgServer) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    url = pg_server.create_database()
    stores = (PostgresStore(url), PostgresStore(url))
    for s in stores:
        await s.open()
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


async def _outcome(ledger: PgNonces, nonce: str, owner: str, now: float) -> object:
    try:
        return await ledger.remember(nonce, int(now) + 300, now, owner)
    except (NonceShareFull, NonceStoreFull) as exc:
        return type(exc)


async def test_a_nonce_sent_to_two_replicas_at_once_is_kept_by_one(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = (PgNonces(s, 100_000, 1000) for s in two)
    now = time.time()
    nonces = [f"n{k:04d}" for k in range(300)]
    calls = [
        _outcome(ledger, n, f"w{k % 7}", now) for k, n in enumerate(nonces) for ledger in (a, b)
    ]
    outcomes = await asyncio.gather(*calls)
    for k in range(len(nonces)):
        assert sorted(map(str, outcomes[2 * k : 2 * k + 2])) == ["False", "True"], nonces[k]
    seen = await asyncio.gather(*(ledger.seen(n, now) for n in nonces for ledger in (a, b)))
    assert all(seen)
    assert not await a.seen("never-sent", now)


async def test_a_nonce_twice_in_one_batch_is_a_replay(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a = PgNonces(two[0], 1000, 100)
    now = time.time()
    outcomes = await asyncio.gather(*(_outcome(a, "same", "w1", now) for _ in range(5)))
    assert sorted(map(str, outcomes)) == ["False"] * 4 + ["True"]


async def test_a_workers_share_holds_within_one_batch_and_across_replicas(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = (PgNonces(s, 100_000, 5) for s in two)
    now = time.time()
    calls = [_outcome(a, f"s{k}", "greedy", now) for k in range(12)]
    calls += [_outcome(a, f"o{k}", "other", now) for k in range(3)]
    outcomes = await asyncio.gather(*calls)
    greedy, other = outcomes[:12], outcomes[12:]
    assert greedy.count(True) == 5  # one batch: those ahead in it count
    assert greedy.count(NonceShareFull) == 7
    assert other == [True, True, True]
    # The other replica counts what this one committed.
    assert await _outcome(b, "b-late", "greedy", now) is NonceShareFull
    assert await _outcome(b, "b-other", "other", now) is True
    # Once its nonces expire, the worker has room again; an expired nonce may be used again.
    later = now + 400
    assert await _outcome(a, "s0", "greedy", later) is True
    assert await _outcome(b, "late", "greedy", later) is True


async def test_the_store_fills_up_from_the_count_of_every_replica(
    two: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_replicas, "COUNT_EVERY", 0.0)
    a, b = (PgNonces(s, 10, 10) for s in two)
    now = time.time()
    assert (
        await asyncio.gather(*(_outcome(a, f"a{k}", f"w{k}", now) for k in range(9))) == [True] * 9
    )
    assert await _outcome(b, "b0", "wb", now) is True
    assert b._upkeep_task is not None
    await b._upkeep_task  # the count, in the background: 10 live nonces in all
    assert await _outcome(b, "b1", "wb", now) is NonceStoreFull
    # Expired nonces are purged in the background and leave room.
    monkeypatch.setattr(postgres_replicas, "PURGE_EVERY", 0.0)
    later = now + 400
    await b._upkeep_task  # the count the refused call started
    b._upkeep(later)
    assert b._upkeep_task is not None
    await b._upkeep_task
    left = await two[0].pool.fetchval("SELECT count(*) FROM nonces")
    assert left == 0
    assert await _outcome(b, "b2", "wb", later) is True
