"""What replicas on one PostgreSQL database share: nonces, sessions, sweep claims, the DNS lead.

The tables are the store's migration 2 (postgres_store.py). Times a claim or a lock depends on
are the database's clock, so replicas on hosts whose clocks differ a little still agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

from vectis.crypto.signing import NonceShareFull, NonceStoreFull
from vectis.dashboard import auth
from vectis.dashboard.call_batches import CallBatches
from vectis.dashboard.model import Worker
from vectis.dashboard.replicas import (
    Leadership,
    NonceLedger,
    SessionStore,
    Shared,
    SweepClaims,
)

if TYPE_CHECKING:
    from vectis.dashboard.postgres_store import PostgresStore

log = logging.getLogger("vectis.dashboard")

#: How often a replica deletes expired nonces and sessions (each replica, in bulk, in the
#: background: never inside a request).
PURGE_EVERY = 30.0
#: How often a replica counts the live nonces, in the background, for the store's capacity.
#: Between counts it adds what it stored itself; what other replicas stored meanwhile is
#: counted at the next count: the store may run past its capacity by what they admit in
#: COUNT_EVERY seconds. Counting 500,000 live nonces on every heartbeat, or once a second
#: inside one, cost more than the check is worth.
COUNT_EVERY = 10.0
#: Key of the advisory lock the replica running the DNS loop holds ("vdns").
DNS_LOCK = 0x76646E73
_DB_NOW = "extract(epoch FROM clock_timestamp())"
_COLUMNS = ", ".join(f.name for f in fields(Worker))

_SEEN = "SELECT nonce FROM nonces WHERE nonce = ANY($1::text[]) AND expires_at > $2"
# Many nonces in one statement, committed together: each stored if its owner's live nonces,
# with those before it in the batch, stay within the share, and if no live entry holds it.
_REMEMBER = (
    "INSERT INTO nonces (nonce, owner, expires_at) "
    "SELECT b.nonce, b.owner, b.expires_at FROM ("
    "SELECT n.nonce, n.owner, n.expires_at, "
    "row_number() OVER (PARTITION BY n.owner ORDER BY n.k) AS rank "
    "FROM unnest($1::text[], $2::text[], $3::float8[]) WITH ORDINALITY "
    "AS n(nonce, owner, expires_at, k)) AS b "
    "WHERE b.rank + (SELECT count(*) FROM nonces o "
    "WHERE o.owner = b.owner AND o.expires_at > $4) <= $5 "
    "ON CONFLICT (nonce) DO UPDATE SET owner = excluded.owner, "
    "expires_at = excluded.expires_at WHERE nonces.expires_at <= $4 RETURNING nonce"
)


class PgNonces(NonceLedger):
    """The `nonces` table: a replay to any replica finds the nonce its first use left.

    Checks and inserts are batched (call_batches.py): an answer goes out only once the batch
    holding its nonce is committed, so a replay to another replica afterwards finds it.
    """

    def __init__(self, store: PostgresStore, capacity: int, share: int | None) -> None:
        self.store = store
        self.capacity = capacity
        self.share = share if share is not None else capacity
        self._live = 0
        self._counted_at = float("-inf")
        self._purged_at = time.monotonic()
        self._upkeep_task: asyncio.Task[None] | None = None
        self._seen = CallBatches(self._seen_batch, "nonces-seen")
        self._remember = CallBatches(self._remember_batch, "nonces-kept")

    async def seen(self, nonce: str, now: float) -> bool:
        return bool(await self._seen.ask((nonce, now)))

    async def remember(self, nonce: str, expires_at: int, now: float, owner: str) -> bool:
        self._upkeep(now)
        if self._live >= self.capacity:
            raise NonceStoreFull()
        return bool(await self._remember.ask((nonce, float(expires_at), now, owner)))

    async def _seen_batch(self, items: list[tuple[str, float]]) -> list[bool]:
        now = max(at for _, at in items)
        rows = await self.store.pool.fetch(_SEEN, list({n for n, _ in items}), now)
        live = {r[0] for r in rows}
        return [n in live for n, _ in items]

    async def _remember_batch(
        self, items: list[tuple[str, float, float, str]]
    ) -> list[bool | BaseException]:
        now = max(item[2] for item in items)
        first: dict[str, int] = {}  # a nonce twice in one batch: the later one is a replay
        for k, (nonce, *_) in enumerate(items):
            first.setdefault(nonce, k)
        batch = [items[k] for k in first.values()]
        rows = await self.store.pool.fetch(
            _REMEMBER,
            [b[0] for b in batch],
            [b[3] for b in batch],
            [b[1] for b in batch],
            now,
            self.share,
        )
        stored = {r[0] for r in rows}
        self._live += len(stored)
        refused = [b[0] for b in batch if b[0] not in stored]
        live: set[str] = set()
        if refused:  # a replay (a live entry holds it), or its owner's share is full
            found = await self.store.pool.fetch(_SEEN, refused, now)
            live = {r[0] for r in found}
        outcomes: list[bool | BaseException] = []
        for k, (nonce, _, _, owner) in enumerate(items):
            if first[nonce] != k or nonce in live:
                outcomes.append(False)
            elif nonce in stored:
                outcomes.append(True)
            else:
                outcomes.append(NonceShareFull(owner))
        return outcomes

    def _upkeep(self, now: float) -> None:
        """Start the purge and the count when due, in the background; never waited for."""
        if self._upkeep_task is not None and not self._upkeep_task.done():
            return
        mono = time.monotonic()
        purge = mono - self._purged_at >= PURGE_EVERY
        count = mono - self._counted_at >= COUNT_EVERY
        if purge or count:
            if purge:
                self._purged_at = mono
            self._counted_at = mono
            self._upkeep_task = asyncio.create_task(
                self._upkeep_once(purge, now), name="vectis-nonces-upkeep"
            )

    async def _upkeep_once(self, purge: bool, now: float) -> None:
        try:
            if purge:
                await self.store.pool.execute("DELETE FROM nonces WHERE expires_at <= $1", now)
            live = await self.store.pool.fetchval(
                "SELECT count(*) FROM nonces WHERE expires_at > $1", now
            )
            self._live = int(live)
        except Exception as exc:  # the database away: the next due upkeep tries again
            log.warning("nonces: purge or count failed (%s)", type(exc).__name__)


def _sid_hash(sid: str) -> str:
    """What the table holds of a session's cookie: whoever reads the table cannot use it."""
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()


class PgSessions(SessionStore):
    """The `sessions` table: a login on one replica is a session on all; a logout ends it."""

    def __init__(
        self,
        store: PostgresStore,
        ttl: float = auth.SESSION_TTL,
        capacity: int = auth.MAX_SESSIONS,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.capacity = capacity

    async def create(self, now: float) -> tuple[str, auth.Session]:
        sid = secrets.token_urlsafe(32)
        session = auth.Session(csrf=secrets.token_urlsafe(32), expires=now + self.ttl)
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO sessions (id_hash, csrf, expires_at) VALUES ($1, $2, $3)",
                _sid_hash(sid),
                session.csrf,
                session.expires,
            )
            # Bounded as in memory: the expired go, then the oldest past the capacity.
            await conn.execute("DELETE FROM sessions WHERE expires_at <= $1", now)
            await conn.execute(
                "DELETE FROM sessions WHERE id_hash IN (SELECT id_hash FROM sessions "
                "ORDER BY expires_at DESC, id_hash OFFSET $1)",
                self.capacity,
            )
        return sid, session

    async def get(self, sid: str | None, now: float) -> auth.Session | None:
        if not sid:
            return None
        row = await self.store.pool.fetchrow(
            "SELECT csrf, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2",
            _sid_hash(sid),
            now,
        )
        return None if row is None else auth.Session(csrf=str(row[0]), expires=float(row[1]))

    async def drop(self, sid: str | None) -> None:
        if sid:
            await self.store.pool.execute("DELETE FROM sessions WHERE id_hash = $1", _sid_hash(sid))


class PgSweepClaims(SweepClaims):
    """Each worker's `sweep_due_at`: claimed (pushed one interval on) by one replica at a time.

    `FOR UPDATE SKIP LOCKED` lets replicas claim side by side without waiting on one another,
    and never hands one worker to two.
    """

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def claim(self, interval: float, limit: int) -> list[Worker]:
        # In the order of the index on sweep_due_at alone: ordered by id as well, each claim
        # sorted every due worker (all 100,000 at the first sweep) to take a few hundred.
        rows = await self.store.pool.fetch(
            f"UPDATE workers SET sweep_due_at = {_DB_NOW} + $1 WHERE id IN ("  # noqa: S608
            f"SELECT id FROM workers WHERE sweep_due_at <= {_DB_NOW} "
            "ORDER BY sweep_due_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_COLUMNS}",
            interval,
            limit,
        )
        return sorted((Worker(*r) for r in rows), key=lambda w: w.id)

    async def next_due(self) -> float | None:
        value = await self.store.pool.fetchval(
            f"SELECT min(sweep_due_at) - {_DB_NOW} FROM workers"  # noqa: S608
        )
        return None if value is None else float(value)


class PgLead(Leadership):
    """A session-level advisory lock on a connection of this replica's own.

    The lock lasts as long as the connection: a replica that dies, or loses the database,
    lets it go, and another replica takes it at its next try.
    """

    def __init__(self, store: PostgresStore, key: int, what: str) -> None:
        self.store = store
        self.key = key
        self.what = what
        self._conn: Any = None

    async def held(self) -> bool:
        if self._conn is not None:
            try:
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), 5)
                return True
            except Exception as exc:  # the connection, and with it the lock, is gone
                log.warning("%s: lost the lead (%s)", self.what, type(exc).__name__)
                await self.release()
                return False
        conn = await asyncpg.connect(self.store.url, timeout=10)
        try:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                self._conn, conn = conn, None
                log.info("%s: this replica leads", self.what)
                return True
            return False
        finally:
            if conn is not None:
                await conn.close()

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:  # closing a broken connection: nothing is held any more
                conn.terminate()


def shared(store: PostgresStore) -> Shared:
    """The shared parts over `store`'s database."""
    return Shared(
        nonces=lambda capacity, share: PgNonces(store, capacity, share),
        sessions=PgSessions(store),
        sweeps=PgSweepClaims(store),
        dns_lead=PgLead(store, DNS_LOCK, "DNS"),
    )
