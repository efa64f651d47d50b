"""Workers' rows as a heartbeat last found them, so a heartbeat that changes nothing reads nothing.

A fleet's workers send the same heartbeat body again and again (same IP, version, port and
revision); reading each worker's row for every one of them cost a store read each, about a
third of the dashboard's CPU per heartbeat (issue 16). Here each worker's row is kept with
the last body that, against that row, changed nothing but the time the worker was last seen,
and the answer that row gives. The same bytes again, against the same row, change nothing
again: heartbeats.py answers them without parsing the body or reading the store.

How the rows stay true (docs/protocol.md#heartbeat):

- This process's writes: every public write method of every `Store` reports the rows it
  wrote once it returns (store.py, `Store.__init_subclass__`), so no caller has to remember
  to. `update_workers` hands over the rows as stored (those kept here are replaced, or kept
  with their older last-seen times when nothing else moved; a sweep adds none: rows are kept
  for the workers that heartbeat); any other write drops the rows
  it names, and a write that `_READS` and `_WRITES_ONE` below do not name drops every row.
- Other processes' writes (dashboard replicas on one PostgreSQL database; a command run on
  the SQLite file): `keep_fresh()` asks the store every `CHECK_EVERY` seconds which rows
  were written elsewhere since its last check, and drops them: PostgreSQL names them
  (postgres_changes.py); SQLite only tells that another connection committed, and then
  every row goes. A row is answered from only while the last such check started less than
  `BOUND` seconds ago: no answer from here is older than that, and a secret rotation or a
  deletion through another replica takes effect within it.
- A read that raced a write: `stamp()` before the read, `put()` after it; the row is kept
  only when nothing dropped or wrote it in between.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vectis import __version__
from vectis.crypto.signing import body_sha256

if TYPE_CHECKING:
    from vectis.dashboard.model import Worker
    from vectis.dashboard.store import Store

log = logging.getLogger("vectis.dashboard")

#: Seconds: no heartbeat is answered from a row checked against other writers longer ago.
BOUND = 1.0
#: Seconds between checks for other processes' writes.
CHECK_EVERY = 0.25
#: Checks between two prunes of forgotten drops (about 10 s).
PRUNE_EVERY = 40


def _slim(row: Worker) -> Worker:
    """`row` without its stats and metadata, which no heartbeat reads: a fleet's rows kept
    here cost a few hundred bytes each, not kilobytes."""
    if row.stats_json is None and row.metadata_json is None:
        return row
    return replace(row, stats_json=None, metadata_json=None)


def seen_only(before: Worker, after: Worker) -> bool:
    """Whether `after` differs from `before` only in when the worker was last seen."""
    return replace(after, last_sync=before.last_sync, updated_at=before.updated_at) == before


def heartbeat_answer(w: Worker) -> bytes:
    """The body of a heartbeat's answer for the worker's row `w` (docs/protocol.md#heartbeat)."""
    return b'{"status": "%s", "revision": %d, "config": %s, "dashboard_version": "%s"}' % (
        w.status.encode(),
        w.desired_revision,
        w.config_json.encode("utf-8"),
        __version__.encode(),
    )


class Entry:
    """One worker's row, and the last heartbeat body known to change nothing against it."""

    __slots__ = ("_answer", "quiet", "row", "stamp")

    def __init__(self, row: Worker, stamp: int) -> None:
        self.row = row
        self.stamp = stamp  # the cache's stamp when the row was kept
        self.quiet: bytes | None = None
        self._answer: tuple[bytes, str] | None = None

    @property
    def answer(self) -> tuple[bytes, str]:
        """The heartbeat answer this row gives, and its SHA-256 (hex) that the signature covers."""
        if self._answer is None:
            body = heartbeat_answer(self.row)
            self._answer = body, body_sha256(body)
        return self._answer


class WorkerCache:
    """Worker id -> `Entry`; an int in its place is the stamp of the write that dropped it.

    A row read or written by a call that began before the stamp its id holds now (an Entry's
    or a drop's) may be older than what is held: it is dropped, and read again when needed.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # monotonic: a step of the wall clock must not stretch BOUND
        self._entries: dict[str, Entry | int] = {}
        self._stamp = 0
        self._cleared = 0  # the stamp of the last time every row was dropped
        self._pruned = 0  # drops up to this stamp may have been forgotten (`prune`)
        self._prune_mark = 0
        self._checked_at = float("-inf")  # when the last check for other writers started
        # Writes may be reported from another thread than the readers' (a store's own).
        self._lock = threading.Lock()
        self._checker: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if isinstance(e, Entry))

    # -- readers ------------------------------------------------------------------------------

    def fresh(self) -> bool:
        """Whether rows held here may answer now (other writers were checked recently)."""
        return self.clock() - self._checked_at <= BOUND

    def get(self, worker_id: str) -> Entry | None:
        """The worker's entry while rows may answer; None: read the store."""
        entry = self._entries.get(worker_id)
        if isinstance(entry, Entry) and self.fresh():
            return entry
        return None

    def stamp(self) -> int:
        """Take before a read whose row goes to `put`."""
        return self._stamp

    def put(self, row: Worker, stamp: int) -> Entry | None:
        """Keep `row`, read after `stamp()` gave `stamp`, unless a write came in between."""
        row = _slim(row)
        with self._lock:
            if self._later(row.id, stamp):
                return None
            held = self._entries.get(row.id)
            if isinstance(held, Entry) and held.row == row:
                return held
            entry = self._entries[row.id] = Entry(row, self._stamp)
            return entry

    def _later(self, worker_id: str, stamp: int) -> bool:
        """Whether something was kept or dropped for `worker_id` after `stamp` (hold the lock)."""
        held = self._entries.get(worker_id)
        at = held.stamp if isinstance(held, Entry) else held
        # Absent: a drop up to `_pruned` may have been forgotten.
        return self._cleared > stamp or (self._pruned if at is None else at) > stamp

    def prune(self) -> None:
        """Forget the drops made before the previous prune: a read that began before them
        is refused anyway (`_pruned`); the ids of workers never kept here do not pile up."""
        with self._lock:
            floor, self._prune_mark = self._prune_mark, self._stamp
            self._entries = {
                i: e for i, e in self._entries.items() if isinstance(e, Entry) or e > floor
            }
            self._pruned = max(self._pruned, floor)

    # -- writers (Store.__init_subclass__) ----------------------------------------------------

    def wrote(self, rows: Iterable[Worker], dropped: Collection[str] | None, stamp: int) -> None:
        """A store write returned: `rows` as now stored (taken when nothing else wrote them
        since `stamp`), `dropped` the ids of other rows it may have changed (None: any)."""
        with self._lock:
            self._stamp += 1
            now = self._stamp
            if dropped is None:
                self._entries.clear()
                self._cleared = now
                return
            for worker_id in dropped:
                self._entries[worker_id] = now
            for row in rows:
                held = self._entries.get(row.id)
                if not isinstance(held, Entry) or self._later(row.id, stamp):
                    # Not kept here (a sweep writes every worker: rows are kept for the
                    # workers that heartbeat), or another call raced this one: read again.
                    self._entries[row.id] = now
                    continue
                slim = _slim(row)
                if seen_only(held.row, slim):
                    # Only the last-seen times moved (a sync that changed nothing else, each
                    # worker once an interval): the row held answers as before and keeps the
                    # older times, as after `mark_seen`. Kept, not replaced: a new row for
                    # every sync left the collector 2 objects a sync to carry into its
                    # oldest generation, and a full collection every few seconds.
                    held.stamp = now
                else:
                    self._entries[row.id] = Entry(slim, now)

    # -- other processes' writes --------------------------------------------------------------

    def start(self, store: Store) -> None:
        """Begin checking for other writers (idempotent); rows answer once the first check ran."""
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self.keep_fresh(store), name="vectis-rows")

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
            self._checker = None

    async def keep_fresh(self, store: Store) -> None:
        """Every CHECK_EVERY s: drop the rows another process may have written."""
        since: Any = None
        checks = 0
        while True:
            started = self.clock()
            try:
                since, elsewhere = await store.workers_written_elsewhere(since)
            except Exception as exc:  # rows stop answering within BOUND; the store path reports
                log.debug("checking for other writers failed: %s", type(exc).__name__)
            else:
                if elsewhere is None or elsewhere:
                    self.wrote((), elsewhere, self._stamp)
                self._checked_at = started
            checks += 1
            if checks % PRUNE_EVERY == 0:
                self.prune()
            await asyncio.sleep(CHECK_EVERY)


# -- the stores' side ---------------------------------------------------------------------------

#: Store methods that write nothing a row here answers with. `mark_seen` writes only the
#: last-seen times, which no heartbeat's answer shows: the rows here keep older ones. Every
#: other public coroutine method of a store is taken to write rows: `update_workers` hands
#: over the rows it stored, `register` and the methods in `_WRITES_ONE` (named by their first
#: argument) drop the one they name, and any other drops every row. A new method that only
#: reads belongs here.
_READS = frozenset(
    {
        "mark_seen",
        "open",
        "close",
        "healthy",
        "get_meta",
        "set_meta",
        "get_worker",
        "list_workers",
        "list_workers_json",
        "page_workers",
        "summary",
        "worker_secrets",
        "workers_written_elsewhere",
        "history",
        "dns_due",
        "add_dns_orphan",
        "dns_orphans_due",
        "set_dns_orphan",
        "create_token",
        "find_token",
        "list_tokens",
        "revoke_token",
        "status_counts",
        "list_groups",
        "get_group",
        "count_selected",
    }
)
_WRITES_ONE = frozenset({"rotate_secret", "delete_worker", "set_worker_settings"})


def report_writes(cls: type) -> None:
    """Wrap the write methods `cls` defines so each reports to the store's `watchers`."""
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or name in _READS or not inspect.iscoroutinefunction(fn):
            continue
        setattr(cls, name, _reporting(name, fn))


def _reporting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def write(self: Store, *args: Any, **kwargs: Any) -> Any:
        watchers = self.watchers
        if not watchers:
            return await fn(self, *args, **kwargs)
        stamps = [w.stamp() for w in watchers]
        rows: Iterable[Worker] = ()
        dropped: Collection[str] | None = None
        try:
            result = await fn(self, *args, **kwargs)
        except BaseException:
            if name == "update_workers" or name in _WRITES_ONE:
                dropped = _named(name, args, kwargs)
            raise
        else:
            if name == "update_workers":
                rows, dropped = result, ()
            elif name == "register":
                dropped = [result[0].id]
            elif name in _WRITES_ONE:
                dropped = _named(name, args, kwargs)
        finally:
            for watcher, stamp in zip(watchers, stamps, strict=True):
                watcher.wrote(rows, dropped, stamp)
        return result

    return write


def _named(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Collection[str] | None:
    """The worker ids a write's call names (None: unknown, which drops every row)."""
    if name == "update_workers":
        ids = args[0] if args else kwargs.get("ids")
        return None if ids is None else list(ids)
    worker_id = args[0] if args else kwargs.get("worker_id")
    return None if worker_id is None else [worker_id]
