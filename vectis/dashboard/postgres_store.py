"""The PostgreSQL store: the `Store` over asyncpg and a connection pool, with its migrations.

Chosen by `VECTIS_DATABASE_URL` (README, Choosing PostgreSQL); only then is this module, and
asyncpg (about 45 ms to import), loaded. Semantics are the SQLite store's, checked by one
contract suite (tests/store/). Writes that read first lock the rows they read
(`SELECT ... FOR UPDATE`), so several writers, in one process or several, never lose one
another's changes; unique indexes decide races between registrations of one secret or
address, and the loser is answered as if it had come second.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple, fields, replace
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from vectis.dashboard import schemas
from vectis.dashboard.call_batches import CallBatches
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
from vectis.dashboard.model import (
    Changes,
    Token,
    Worker,
    worker_object,
)
from vectis.dashboard.postgres_changes import ChangeFeed
from vectis.dashboard.replicas import Shared
from vectis.dashboard.selectors import Selector, parse
from vectis.dashboard.settings import redact_url
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

#: The schema as numbered steps; `vectis_migrations` holds one row per step applied. Never
#: edit a step that has shipped: append one. Text compares byte-wise (COLLATE "C") as in
#: SQLite, so lists sort alike whatever the database's locale.
MIGRATIONS: list[str] = [
    # 1: the SQLite schema at its version 3, in one step.
    """
    CREATE TABLE workers (
        id TEXT COLLATE "C" PRIMARY KEY,
        subdomain TEXT COLLATE "C" NOT NULL,
        ip TEXT COLLATE "C" NOT NULL,
        port INTEGER NOT NULL,
        secret TEXT COLLATE "C" NOT NULL,
        secret_hash TEXT COLLATE "C" NOT NULL,
        hostname TEXT COLLATE "C",
        version TEXT COLLATE "C",
        status TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
        last_sync TEXT COLLATE "C",
        last_error TEXT COLLATE "C",
        consecutive_failures BIGINT NOT NULL DEFAULT 0,
        dns_status TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
        dns_error TEXT COLLATE "C",
        dns_attempts BIGINT NOT NULL DEFAULT 0,
        dns_next_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        desired_revision BIGINT NOT NULL DEFAULT 0,
        config_json TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        applied_revision BIGINT NOT NULL DEFAULT 0,
        stats_json TEXT COLLATE "C",
        metadata_json TEXT COLLATE "C",
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
    );
    CREATE UNIQUE INDEX workers_secret_hash ON workers (secret_hash);
    CREATE UNIQUE INDEX workers_address ON workers (ip, port);
    CREATE INDEX workers_order ON workers (created_at, id);
    CREATE INDEX workers_dns_due ON workers (dns_status, dns_next_at);
    CREATE TABLE history (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        worker_id TEXT COLLATE "C" NOT NULL,
        at TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL,
        previous TEXT COLLATE "C" NOT NULL,
        cause TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX history_worker ON history (worker_id, seq);
    CREATE TABLE tokens (
        id TEXT COLLATE "C" PRIMARY KEY,
        token_hash TEXT COLLATE "C" NOT NULL UNIQUE,
        description TEXT COLLATE "C",
        created_at TEXT COLLATE "C" NOT NULL,
        expires_at TEXT COLLATE "C",
        max_uses BIGINT,
        uses BIGINT NOT NULL DEFAULT 0,
        revoked_at TEXT COLLATE "C"
    );
    CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT COLLATE "C" NOT NULL);
    CREATE TABLE dns_orphans (
        name TEXT COLLATE "C" PRIMARY KEY,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    """,
    # 2: what dashboard replicas on one database share (replicas.py, postgres_replicas.py):
    # the nonces of signed calls, the page's sessions, and each worker's next periodic sync.
    """
    CREATE TABLE nonces (
        nonce TEXT COLLATE "C" PRIMARY KEY,
        owner TEXT COLLATE "C" NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX nonces_owner ON nonces (owner, expires_at);
    CREATE INDEX nonces_expiry ON nonces (expires_at);
    CREATE TABLE sessions (
        id_hash TEXT COLLATE "C" PRIMARY KEY,
        csrf TEXT COLLATE "C" NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX sessions_expiry ON sessions (expires_at);
    ALTER TABLE workers ADD COLUMN sweep_due_at DOUBLE PRECISION NOT NULL DEFAULT 0;
    CREATE INDEX workers_sweep_due ON workers (sweep_due_at);
    """,
    # 3: the worker's pinned TLS key and the next one while a rotation is pending (SQLite's 5).
    """
    ALTER TABLE workers ADD COLUMN tls_pin TEXT COLLATE "C",
        ADD COLUMN tls_pin_next TEXT COLLATE "C";
    """,
    # 4: labels and config groups (SQLite's 6; groups.py).
    """
    ALTER TABLE workers ADD COLUMN labels_json TEXT COLLATE "C" NOT NULL DEFAULT '{}',
        ADD COLUMN own_config_json TEXT COLLATE "C" NOT NULL DEFAULT '{}';
    UPDATE workers SET own_config_json = config_json;
    CREATE TABLE worker_labels (
        worker_id TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        value TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (worker_id, key)
    );
    CREATE INDEX worker_labels_selector ON worker_labels (key, value, worker_id);
    CREATE TABLE config_groups (
        name TEXT COLLATE "C" PRIMARY KEY,
        selector TEXT COLLATE "C" NOT NULL,
        priority BIGINT NOT NULL,
        config_json TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
    );
    """,
    # 5: a worker's id on channel `vectis_workers` whenever its row changes in anything a
    # heartbeat's answer may show, or goes (postgres_changes.py): replicas drop their copies.
    """
    CREATE FUNCTION vectis_worker_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('vectis_workers', OLD.id);
        RETURN NULL;
    END
    $$;
    CREATE FUNCTION vectis_worker_facts(w workers) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT to_jsonb(w) - '{last_sync,updated_at,stats_json,metadata_json,sweep_due_at}'::text[]
    $$;
    CREATE TRIGGER workers_changed AFTER UPDATE ON workers FOR EACH ROW
        WHEN (vectis_worker_facts(OLD) IS DISTINCT FROM vectis_worker_facts(NEW))
        EXECUTE FUNCTION vectis_worker_changed();
    CREATE TRIGGER workers_deleted AFTER DELETE ON workers FOR EACH ROW
        EXECUTE FUNCTION vectis_worker_changed();
    """,
]

LATEST = len(MIGRATIONS)
# Held (per transaction) while migrating, so dashboards starting together migrate once.
_MIGRATION_LOCK = 0x76656374  # "vect"
# Held (per transaction) by whatever merges configs: shared by a change to one worker (its
# row is locked too), exclusive by a change to a group, so that a group change and a worker's
# registration or relabelling in another replica never miss each other.
_GROUPS_LOCK = 0x76677270  # "vgrp"


async def migrate(conn: Any, target: int = LATEST) -> int:
    """Apply the numbered steps the database has not seen; return the version reached."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS vectis_migrations ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = int(
            await conn.fetchval("SELECT coalesce(max(version), 0) FROM vectis_migrations")
        )
        if version > LATEST:
            raise ConfigError(
                f"database schema version {version} is newer than this Vectis ({LATEST}); "
                "upgrade Vectis"
            )
        for number in range(version + 1, target + 1):
            await conn.execute(MIGRATIONS[number - 1])
            await conn.execute("INSERT INTO vectis_migrations (version) VALUES ($1)", number)
            log.info("database schema migrated to version %d", number)
    return max(version, target)


_WORKER_COLUMNS = [f.name for f in fields(Worker)]
# A worker's column values in order (astuple would deep-copy each field).
_values = operator.attrgetter(*_WORKER_COLUMNS)
_SELECT_WORKER = f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers"  # noqa: S608
_UPDATE_WORKER = (
    "UPDATE workers SET "  # noqa: S608 (column names are ours)
    + ", ".join(f"{c} = ${n}" for n, c in enumerate(_WORKER_COLUMNS[1:], 1))
    + f" WHERE id = ${len(_WORKER_COLUMNS)}"
)
_INSERT_WORKER = (
    f"INSERT INTO workers ({', '.join(_WORKER_COLUMNS)}, secret_hash) "  # noqa: S608
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(_WORKER_COLUMNS) + 2))})"
)
_GROUP_COLUMNS = [f.name for f in fields(ConfigGroup)]
_SELECT_GROUP = f"SELECT {', '.join(_GROUP_COLUMNS)} FROM config_groups"  # noqa: S608
_TOKEN_COLUMNS = [f.name for f in fields(Token)]
_SELECT_TOKEN = f"SELECT {', '.join(_TOKEN_COLUMNS)} FROM tokens"  # noqa: S608
_INSERT_HISTORY = (
    "INSERT INTO history (worker_id, at, status, previous, cause) "
    "SELECT w, a, s, p, c FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::text[]) WITH ORDINALITY AS t(w, a, s, p, c, n) ORDER BY n"
)
# Everything past the latest HISTORY_KEEP entries of each of these workers.
_TRIM_HISTORY = (
    "DELETE FROM history WHERE seq IN (SELECT seq FROM (SELECT seq, row_number() OVER "
    "(PARTITION BY worker_id ORDER BY seq DESC) AS k FROM history "
    "WHERE worker_id = ANY($1::text[])) AS ranked WHERE k > $2)"
)
#: `update_workers` calls of at most this many workers (a heartbeat's, a DNS attempt's) are
#: joined with those made meanwhile, one transaction and one commit for all (call_batches.py).
JOIN_IDS = 8
#: Attempts at a registration that lost a race on a unique index (the next one sees the winner).
_REGISTER_TRIES = 5
#: How long /healthz trusts the last answer of the database, and waits for a new one.
_HEALTH_TTL = 1.0
_HEALTH_TIMEOUT = 1.0


async def _keep_session(conn: Any) -> None:
    """A connection back in the pool needs no reset query: the store leaves no session state
    behind (no SET, LISTEN, cursor or session advisory lock; PgLead's lock lives on a
    connection of its own), and asyncpg rolls back an open transaction before this runs.
    The default reset is a round trip per query, about a third of a heartbeat's on replicas."""


# What a search (WorkerQuery.q) looks in.
_SEARCHED = ("id", "subdomain", "hostname", "ip")


def _like_escape(text: str) -> str:
    """`text` matched literally by (I)LIKE, whose default escape is the backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _worker(row: Any) -> Worker:
    return Worker(*row)


def _token(row: Any) -> Token:
    return Token(*row)


def _where(selector: Selector, args: list[object]) -> str:
    """`selector` as SQL over the workers table; its parameters appended to `args`."""

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    return selector.sql(arg)


def _row_count(status: str) -> int:
    """The row count of a command tag such as `UPDATE 5`."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore(Store):
    """PostgreSQL through an asyncpg pool; every multi-statement write in one transaction."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self._min_size, self._max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self._healthy_at = 0.0
        self._changes = ChangeFeed(url)
        self._joined = CallBatches(self._update_joined, "worker-writes", most=500)
        self._reads = CallBatches(self._get_workers, "worker-reads", most=500)

    @property
    def pool(self) -> Any:
        assert self._pool is not None, "store is not open"
        return self._pool

    def _where(self) -> str:
        return redact_url(self.url)

    def _hide(self, text: str) -> str:
        """An error's text with the URL's password (if any leaked into it) hidden."""
        return text.replace(self.url, self._where())

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    # -- life cycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=60,
                reset=_keep_session,
                # A plan made for each call's values: a plan cached once for any values, while
                # a table was still small (a new nonces table), scanned it whole ever after.
                server_settings={"plan_cache_mode": "force_custom_plan"},
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
            raise ConfigError(
                f"{self._where()}: cannot connect to the database ({self._hide(str(exc))})"
            ) from None
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except asyncpg.PostgresError as exc:
            await pool.close()
            raise ConfigError(
                f"{self._where()}: not a usable Vectis database ({self._hide(str(exc))})"
            ) from None
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._healthy_at = time.monotonic()
        log.info("store: PostgreSQL at %s", self._where())

    async def close(self) -> None:
        await self._changes.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def shared(self) -> Shared:
        """Replicas on this database share nonces, sessions, the sweep and the DNS lead."""
        from vectis.dashboard import postgres_replicas

        return postgres_replicas.shared(self)

    def unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
            return True
        if isinstance(exc, asyncpg.PostgresError):
            # The server going away: admin shutdown, too many connections while it restarts.
            return exc.sqlstate is not None and exc.sqlstate[:2] in ("08", "57", "53")
        return isinstance(exc, ConnectionError | TimeoutError)

    async def healthy(self) -> bool:
        if self._pool is None:
            return False
        if time.monotonic() - self._healthy_at < _HEALTH_TTL:
            return True
        try:
            await asyncio.wait_for(self._pool.fetchval("SELECT 1"), _HEALTH_TIMEOUT)
        except Exception:  # whatever the failure, the answer is: not now
            return False
        self._healthy_at = time.monotonic()
        return True

    # -- meta ---------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        value = await self.pool.fetchval("SELECT value FROM meta WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        await self.pool.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )

    # -- workers ------------------------------------------------------------------------------

    @staticmethod
    async def _history(conn: Any, rows: Sequence[tuple[str, StatusChange]]) -> None:
        if not rows:
            return
        await conn.execute(
            _INSERT_HISTORY,
            [wid for wid, _ in rows],
            [c.at for _, c in rows],
            [c.status.value for _, c in rows],
            [c.previous.value for _, c in rows],
            [c.cause for _, c in rows],
        )
        await conn.execute(_TRIM_HISTORY, sorted({wid for wid, _ in rows}), HISTORY_KEEP)

    async def register(
        self, reg: Registration, zone: str, new_id: Callable[[], str], now: datetime
    ) -> tuple[Worker, bool]:
        for _ in range(_REGISTER_TRIES):
            try:
                return await self._register(reg, zone, new_id, now)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "workers_address":
                    # A worker that has just taken the address: the next try says Conflict.
                    continue
                if exc.constraint_name in ("workers_secret_hash", "workers_pkey"):
                    continue  # the same secret, or a drawn id, stored meanwhile: try again
                raise
        raise Conflict("registration raced with others too often; try again")

    async def _register(
        self, reg: Registration, zone: str, new_id: Callable[[], str], now: datetime
    ) -> tuple[Worker, bool]:
        digest = secret_hash(reg.secret)
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _GROUPS_LOCK)
            # One statement, so one snapshot: the secret's worker and the address's holder as
            # of the same moment, even while other registrations commit.
            found = [
                _worker(r)
                for r in await conn.fetch(
                    f"{_SELECT_WORKER} WHERE secret_hash = $1 OR (ip = $2 AND port = $3) "
                    "FOR UPDATE",
                    digest,
                    reg.ip,
                    reg.port,
                )
            ]
            mine = [w for w in found if secret_hash(w.secret) == digest]
            holder = next((w.id for w in found if (w.ip, w.port) == (reg.ip, reg.port)), None)
            if mine:
                old = mine[0]
                if holder is not None and holder != old.id:
                    raise Conflict(f"{reg.ip} port {reg.port} is held by another worker")
                w, labels = reg.again(old, now)
                history: Changes = []
                if labels is not None:
                    await self._set_labels(conn, w.id, labels)
                    groups = await self._groups(conn)
                    w, history = reconfigured(w, groups, now, "labels changed") or (w, [])
                await conn.execute(_UPDATE_WORKER, *_values(w)[1:], w.id)
                await self._history(conn, [(w.id, c) for c in history])
                return w, False
            if holder is not None:
                raise Conflict(f"{reg.ip} port {reg.port} is held by another worker")
            if reg.token_id is not None:
                used = await conn.execute(
                    "UPDATE tokens SET uses = uses + 1 WHERE id = $1 AND revoked_at IS NULL "
                    "AND (max_uses IS NULL OR uses < max_uses) "
                    "AND (expires_at IS NULL OR expires_at > $2)",
                    reg.token_id,
                    iso(now),
                )
                if _row_count(used) != 1:
                    raise Unauthorized("enrollment token used up, expired or revoked")
            for _ in range(100):
                worker_id = new_id()
                if await conn.fetchval("SELECT 1 FROM workers WHERE id = $1", worker_id):
                    continue  # a collision: draw again, never reuse an ID
                w, change = reg.first(worker_id, zone, now)
                w = first_config(w, await self._groups(conn))
                await conn.execute(_INSERT_WORKER, *_values(w), digest)
                await self._set_labels(conn, w.id, reg.labels or {})
                await self._history(conn, [(w.id, change)])
                return w, True
            raise Conflict("could not draw a free worker ID; try again")

    async def get_worker(self, worker_id: str) -> Worker | None:
        # Joined with the reads asked meanwhile: after a restart, or a change that every
        # replica hears, each worker's next heartbeat reads its row, thousands a second.
        return await self._reads.ask(worker_id)

    async def _get_workers(self, ids: list[str]) -> list[Worker | None]:
        rows = await self.pool.fetch(f"{_SELECT_WORKER} WHERE id = ANY($1::text[])", ids)
        found = {w.id: w for w in map(_worker, rows)}
        return [found.get(worker_id) for worker_id in ids]

    async def list_workers(self, status: str | None = None) -> list[Worker]:
        if status is None:
            rows = await self.pool.fetch(f"{_SELECT_WORKER} ORDER BY created_at, id")
        else:
            rows = await self.pool.fetch(
                f"{_SELECT_WORKER} WHERE status = $1 ORDER BY created_at, id", status
            )
        return [_worker(r) for r in rows]

    async def list_workers_json(self, status: str | None, dns_provisions: bool) -> bytes:
        """Each worker rendered by msgspec from `model.worker_object`, as the API defines it."""
        workers = await self.list_workers(status)
        parts = [schemas.encode(worker_object(w, dns_provisions=dns_provisions)) for w in workers]
        return b'{"workers":[' + b",".join(parts) + b"]}"

    async def page_workers(self, query: WorkerQuery) -> list[Worker]:
        where: list[str] = []
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.status is not None:
            where.append(f"status = {arg(query.status)}")
        if query.dns_status is not None:
            where.append(f"dns_status = {arg(query.dns_status)}")
        if query.after is not None:
            where.append(f"(created_at, id) > ({arg(query.after[0])}, {arg(query.after[1])})")
        if query.selector is not None and query.selector.requirements:
            where.append(_where(query.selector, args))
        if query.q:
            # ILIKE under COLLATE "C" folds ASCII letters only, as SQLite's LIKE does.
            pattern = arg("%" + _like_escape(query.q) + "%")
            where.append("(" + " OR ".join(f"{c} ILIKE {pattern}" for c in _SEARCHED) + ")")
        sql = _SELECT_WORKER
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        if query.limit is not None:
            sql += f" LIMIT {arg(query.limit)}"
        return [_worker(r) for r in await self.pool.fetch(sql, *args)]

    async def summary(self, selector: Selector | None = None) -> Summary:
        by_status: dict[str, int] = {}
        by_dns: dict[str, int] = {}
        total = 0
        args: list[object] = []
        where = ""
        if selector is not None and selector.requirements:
            where = f" WHERE {_where(selector, args)}"
        rows = await self.pool.fetch(
            f"SELECT status, dns_status, count(*) FROM workers{where} "  # noqa: S608
            "GROUP BY status, dns_status",
            *args,
        )
        for status, dns, n in rows:
            by_status[status] = by_status.get(status, 0) + n
            by_dns[dns] = by_dns.get(dns, 0) + n
            total += n
        return Summary(total, by_status, by_dns)

    async def worker_secrets(self) -> dict[str, str]:
        rows = await self.pool.fetch("SELECT id, secret FROM workers")
        return {str(r[0]): str(r[1]) for r in rows}

    async def update_workers(
        self, ids: Sequence[str], mutate: Mutation, now: datetime
    ) -> list[Worker]:
        if len(ids) <= JOIN_IDS:
            # A heartbeat's write (one worker): joined with those made meanwhile, so that
            # heartbeats share transactions and durable commits rather than one each.
            return await self._joined.ask((list(ids), mutate))
        return (await self._update_together([(list(ids), mutate)]))[0]

    async def _update_joined(
        self, calls: list[tuple[list[str], Mutation]]
    ) -> list[list[Worker] | BaseException]:
        """Calls to `update_workers` in one transaction; if it fails (one call's change
        conflicts, one call's mutation raises), each call again on its own, so that only
        the failing one fails."""
        if len(calls) > 1:
            try:
                return list(await self._update_together(calls))
            except Exception as exc:
                if self.unavailable(exc):
                    raise  # the database away: every call fails alike
                log.debug("%d joined worker writes failed together; one by one", len(calls))
        outcomes: list[list[Worker] | BaseException] = []
        for call in calls:
            try:
                outcomes.append((await self._update_together([call]))[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def _update_together(
        self, calls: Sequence[tuple[list[str], Mutation]]
    ) -> list[list[Worker]]:
        """Each call's mutation over its workers, in order, in one transaction; each call's
        changed workers. A worker named by two calls gets the second mutation over the
        first's outcome, as two transactions one after the other would."""
        history: list[tuple[str, StatusChange]] = []
        written: dict[str, Worker] = {}
        results: list[list[Worker]] = []
        async with self._tx() as conn:
            # Locked in id order, so two batches over the same workers never deadlock.
            rows = await conn.fetch(
                f"{_SELECT_WORKER} WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                sorted({wid for ids, _ in calls for wid in ids}),
            )
            current = {w.id: w for w in map(_worker, rows)}
            for ids, mutate in calls:
                changed: list[Worker] = []
                for wid in sorted(set(ids)):
                    found = current.get(wid)
                    out = None if found is None else mutate(found)
                    if out is None:
                        continue
                    w, changes = out
                    current[wid] = written[wid] = w
                    changed.append(w)
                    history.extend((w.id, c) for c in changes)
                results.append(changed)
            try:
                if written:
                    await conn.executemany(
                        _UPDATE_WORKER,
                        [(*_values(w)[1:], w.id) for _, w in sorted(written.items())],
                    )
            except asyncpg.UniqueViolationError:
                raise Conflict("that IP and port are held by another worker") from None
            await self._history(conn, history)
        return results

    async def rotate_secret(
        self, worker_id: str, old: str, new: str, now: datetime
    ) -> Worker | None:
        new = new.lower()
        async with self._tx() as conn:
            row = await conn.fetchrow(
                f"{_SELECT_WORKER} WHERE id = $1 AND secret = $2 FOR UPDATE", worker_id, old
            )
            if row is None:
                return None  # deleted, or rotated by another request meanwhile
            try:
                async with conn.transaction():  # a savepoint: the conflict leaves the rest
                    await conn.execute(
                        "UPDATE workers SET secret = $1, secret_hash = $2, updated_at = $3 "
                        "WHERE id = $4",
                        new,
                        secret_hash(new),
                        iso(now),
                        worker_id,
                    )
            except asyncpg.UniqueViolationError:
                raise Conflict("that secret is held by another worker") from None
            w = replace(_worker(row), secret=new, updated_at=iso(now))
            status = SyncStatus(w.status)
            change = StatusChange(iso(now), status, status, "secret rotated")
            await self._history(conn, [(w.id, change)])
            return w

    async def delete_worker(self, worker_id: str) -> Worker | None:
        async with self._tx() as conn:
            row = await conn.fetchrow(
                f"DELETE FROM workers WHERE id = $1 RETURNING {', '.join(_WORKER_COLUMNS)}",  # noqa: S608
                worker_id,
            )
            if row is None:
                return None
            await conn.execute("DELETE FROM history WHERE worker_id = $1", worker_id)
            await conn.execute("DELETE FROM worker_labels WHERE worker_id = $1", worker_id)
            return _worker(row)

    async def history(self, worker_id: str, limit: int = 100) -> list[dict[str, str]]:
        rows = await self.pool.fetch(
            "SELECT at, status, previous, cause FROM history WHERE worker_id = $1 "
            "ORDER BY seq DESC LIMIT $2",
            worker_id,
            limit,
        )
        return [dict(r.items()) for r in reversed(rows)]

    async def dns_due(self, now: float, limit: int) -> list[Worker]:
        rows = await self.pool.fetch(
            f"{_SELECT_WORKER} WHERE dns_status IN ('pending', 'failed') "
            "AND dns_next_at <= $1 ORDER BY dns_next_at LIMIT $2",
            now,
            limit,
        )
        return [_worker(r) for r in rows]

    async def workers_written_elsewhere(self, since: object) -> tuple[object, set[str] | None]:
        """The rows changed since the last check, by anyone (this replica's writes too):
        heard on a connection of its own (postgres_changes.py)."""
        return None, await self._changes.check()

    async def mark_seen(self, seen: Mapping[str, str]) -> None:
        """The heartbeats' grouped write of last-seen times: one UPDATE of two columns, the
        rows locked in id order first, as `update_workers` locks them."""
        ids = sorted(seen)
        async with self._tx() as conn:
            await conn.execute(
                "SELECT 1 FROM workers WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
            )
            await conn.execute(
                "UPDATE workers AS w SET last_sync = s.at, updated_at = s.at "
                "FROM unnest($1::text[], $2::text[]) AS s(id, at) "
                "WHERE w.id = s.id AND (w.last_sync IS NULL OR w.last_sync < s.at)",
                ids,
                [seen[i] for i in ids],
            )

    async def rezone(self, zone: str) -> int:
        status = await self.pool.execute(
            "UPDATE workers SET subdomain = id || '.' || $1, dns_status = 'pending', "
            "dns_error = NULL, dns_attempts = 0, dns_next_at = 0",
            zone,
        )
        return _row_count(status)

    async def add_dns_orphan(self, name: str, next_at: float) -> None:
        await self.pool.execute(
            "INSERT INTO dns_orphans (name, attempts, next_at) VALUES ($1, 1, $2) "
            "ON CONFLICT (name) DO UPDATE SET attempts = 1, next_at = excluded.next_at",
            name,
            next_at,
        )

    async def dns_orphans_due(self, now: float, limit: int) -> list[tuple[str, int]]:
        rows = await self.pool.fetch(
            "SELECT name, attempts FROM dns_orphans WHERE next_at <= $1 ORDER BY next_at LIMIT $2",
            now,
            limit,
        )
        return [(str(n), int(a)) for n, a in rows]

    async def set_dns_orphan(self, name: str, attempts: int | None, next_at: float) -> None:
        if attempts is None:
            await self.pool.execute("DELETE FROM dns_orphans WHERE name = $1", name)
        else:
            await self.pool.execute(
                "UPDATE dns_orphans SET attempts = $1, next_at = $2 WHERE name = $3",
                attempts,
                next_at,
                name,
            )

    # -- labels and config groups -------------------------------------------------------------

    @staticmethod
    async def _set_labels(conn: Any, worker_id: str, labels: dict[str, str]) -> None:
        await conn.execute("DELETE FROM worker_labels WHERE worker_id = $1", worker_id)
        if labels:
            await conn.execute(
                "INSERT INTO worker_labels (worker_id, key, value) "
                "SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)",
                worker_id,
                list(labels),
                list(labels.values()),
            )

    @staticmethod
    async def _group_rows(conn: Any) -> list[ConfigGroup]:
        return [ConfigGroup(*r) for r in await conn.fetch(f"{_SELECT_GROUP} ORDER BY name")]

    async def _groups(self, conn: Any) -> Groups:
        return Groups(await self._group_rows(conn))

    async def _reconfigure(
        self, conn: Any, selectors: Sequence[Selector], now: datetime, reason: str
    ) -> int:
        """Merge again the config of the workers any of `selectors` selects; how many moved.
        The caller holds the groups lock exclusively."""
        groups = await self._groups(conn)
        args: list[object] = []
        where = " OR ".join(f"({_where(s, args)})" for s in selectors)
        # Locked in id order, as update_workers does, so the two never deadlock.
        rows = await conn.fetch(f"{_SELECT_WORKER} WHERE {where} ORDER BY id FOR UPDATE", *args)
        planned = plan([_worker(r) for r in rows], groups, now, reason)
        if planned:
            await conn.executemany(_UPDATE_WORKER, [(*_values(w)[1:], w.id) for w, _ in planned])
        await self._history(conn, [(w.id, c) for w, changes in planned for c in changes])
        return len(planned)

    async def set_worker_settings(
        self,
        worker_id: str,
        now: datetime,
        *,
        labels: dict[str, str] | None = None,
        own_config_json: str | None = None,
    ) -> Worker | None:
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _GROUPS_LOCK)
            row = await conn.fetchrow(f"{_SELECT_WORKER} WHERE id = $1 FOR UPDATE", worker_id)
            if row is None:
                return None
            groups = await self._groups(conn)
            w, history = with_settings(_worker(row), groups, now, labels, own_config_json)
            if labels is not None:
                await self._set_labels(conn, w.id, labels)
            await conn.execute(_UPDATE_WORKER, *_values(w)[1:], w.id)
            await self._history(conn, [(w.id, c) for c in history])
            return w

    async def list_groups(self) -> list[ConfigGroup]:
        async with self.pool.acquire() as conn:
            return await self._group_rows(conn)

    async def get_group(self, name: str) -> ConfigGroup | None:
        row = await self.pool.fetchrow(f"{_SELECT_GROUP} WHERE name = $1", name)
        return None if row is None else ConfigGroup(*row)

    async def count_selected(self, selector: Selector) -> int:
        args: list[object] = []
        sql = f"SELECT count(*) FROM workers WHERE {_where(selector, args)}"  # noqa: S608
        return int(await self.pool.fetchval(sql, *args))

    async def put_group(
        self, name: str, selector: str, priority: int, config_json: str, now: datetime
    ) -> tuple[ConfigGroup, bool, int]:
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _GROUPS_LOCK)
            row = await conn.fetchrow(f"{_SELECT_GROUP} WHERE name = $1", name)
            old = None if row is None else ConfigGroup(*row)
            if old is None:
                check_room(await conn.fetchval("SELECT count(*) FROM config_groups"))
            group, selectors = group_put(old, name, selector, priority, config_json, now)
            await conn.execute(
                f"INSERT INTO config_groups ({', '.join(_GROUP_COLUMNS)}) "  # noqa: S608
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET "
                "selector = excluded.selector, priority = excluded.priority, "
                "config_json = excluded.config_json, updated_at = excluded.updated_at",
                *astuple(group),
            )
            moved_count = await self._reconfigure(conn, selectors, now, f"group {name} changed")
            return group, old is None, moved_count

    async def delete_group(self, name: str, now: datetime) -> tuple[ConfigGroup, int] | None:
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _GROUPS_LOCK)
            row = await conn.fetchrow(
                f"DELETE FROM config_groups WHERE name = $1 "  # noqa: S608
                f"RETURNING {', '.join(_GROUP_COLUMNS)}",
                name,
            )
            if row is None:
                return None
            old = ConfigGroup(*row)
            moved_count = await self._reconfigure(
                conn, [parse(old.selector)], now, f"group {name} deleted"
            )
            return old, moved_count

    # -- tokens -------------------------------------------------------------------------------

    async def create_token(self, token: Token) -> None:
        await self.pool.execute(
            f"INSERT INTO tokens ({', '.join(_TOKEN_COLUMNS)}) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            *astuple(token),
        )

    async def find_token(self, token_hash: str) -> Token | None:
        row = await self.pool.fetchrow(f"{_SELECT_TOKEN} WHERE token_hash = $1", token_hash)
        return None if row is None else _token(row)

    async def list_tokens(self) -> list[Token]:
        return [
            _token(r) for r in await self.pool.fetch(f"{_SELECT_TOKEN} ORDER BY created_at, id")
        ]

    async def revoke_token(self, token_id: str, now: datetime) -> Token | None:
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                iso(now),
                token_id,
            )
            row = await conn.fetchrow(f"{_SELECT_TOKEN} WHERE id = $1", token_id)
            return None if row is None else _token(row)

    async def status_counts(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT status, count(*) FROM workers GROUP BY status")
        return {str(s): int(n) for s, n in rows}
