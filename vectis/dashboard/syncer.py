"""The signed client to workers' `POST /sync`, and sweeps over many workers at once.

Each sync goes through `sync_http`, over a new connection or the one kept from the worker's
last sync (`sync_http.Connections`); a sweep runs a fixed pool of `concurrency` tasks over
the worker list (never one task per worker) and writes outcomes to the store in batches.
A worker already being synced is joined, never synced twice at once.

The exchanges (connect, sign, send, read, verify) run on event loops of their own, each in a
thread of its own (`sync_loop.SyncLoop`), so that a sweep's thousands of exchanges never
make the API's event loop wait: that loop only claims workers, hands them over, and stores
the outcomes it gets back. With several sync threads (`VECTIS_SYNC_THREADS`) a TLS worker
always goes to the same one (a hash of its id), where its kept connection and TLS session
live, and a plain one to the first: OpenSSL's handshakes run without the interpreter lock,
so TLS syncs can use a second core, while a plain sync would only contend for that lock. One
thread is the default: on 2 cores a second one cost more than it gained
(docs/protocol.md#sync-threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from OpenSSL import SSL

from vectis.addresses import Network, worker_address_problem
from vectis.contract import APPLY_ERROR_MAX, MAX_REVISION, VERSION_MAX
from vectis.crypto.secrets import key_from_secret
from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    AuthFailure,
    new_nonce,
    sign_request,
    verify_response,
)
from vectis.dashboard import sync_http
from vectis.dashboard.keyring import KeyRing
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.model import SyncReply, Worker, after_failure, after_sync
from vectis.dashboard.store import Store
from vectis.dashboard.sync_loop import SyncLoop, settle_threadsafe
from vectis.untrusted import parse_object, readable, readable_json

log = logging.getLogger("vectis.dashboard.sync")

# Room in an answer besides its stats and metadata (status, version, ids, JSON punctuation).
ANSWER_OVERHEAD = 16 * 1024
FLUSH_EVERY = 500
# ... or as soon as the oldest waiting outcome is this old, so that a slow sweep's progress
# (the list, the summary, a job) moves while it runs.
FLUSH_AFTER = 0.5
# Outcomes finished within this many seconds go back to the API's loop together: one wake-up
# of that loop per batch, not per worker.
HANDBACK_DELAY = 0.01

Outcome = SyncReply | str  # a verified reply, or the cause of the failure
#: Sessions kept to resume, one per pinned worker; past this many the cache starts again.
SESSIONS_KEPT = 200_000
REQUIRE_TLS_CAUSE = (
    "refused: this worker serves plain HTTP and the dashboard requires TLS (VECTIS_REQUIRE_TLS); "
    "run 'vectis worker init' on it (or its install.sh again), then restart its daemon"
)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SweepCounts:
    total: int
    synced: int
    failed: int
    outdated: int

    def as_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "synced": self.synced,
            "failed": self.failed,
            "outdated": self.outdated,
        }


_NULL = msgspec.Raw(b"null")


class _Answer(msgspec.Struct):
    """A worker's answer as read on the hot path: what is checked by hand stays untyped here,
    so that its refusal says exactly what was wrong; stats and metadata stay raw JSON."""

    worker_id: Any = None
    applied_revision: Any = None
    version: Any = None
    applying_revision: Any = None
    apply_error: Any = None
    stats: msgspec.Raw = _NULL
    metadata: msgspec.Raw = _NULL


_read_answer = msgspec.json.Decoder(_Answer).decode


def _raw_object(raw: msgspec.Raw, field: str, limit: int) -> str | None:
    """A stored JSON object from the answer, checked; None for anything but an object."""
    data = bytes(raw)
    return readable_json(data, field, limit) if data.startswith(b"{") else None


def read_reply(worker_id: str, raw: bytes, stats_limit: int) -> Outcome:
    """Decode a verified 200 answer; a malformed or oversized one is this worker's failure.

    Everything in it is checked here, at the edge, so that nothing one worker answers can
    break the write of a batch that holds other workers' outcomes.
    """
    try:
        try:
            doc = _read_answer(raw)
        except msgspec.DecodeError:
            parse_object(raw, "the answer")  # says what is wrong with it
            raise ValueError("the answer is not valid JSON") from None
        if doc.worker_id is not None and doc.worker_id != worker_id:
            return "identity mismatch: the worker answered under another worker's id"
        applied = doc.applied_revision
        if isinstance(applied, bool) or not isinstance(applied, int) or applied < 0:
            return "bad answer: no valid applied_revision"
        if applied > MAX_REVISION:
            # No dashboard sends such a revision and no worker accepts one: a worker that
            # claims it is broken or lying, and its number would not fit the store.
            return f"bad answer: applied_revision is above {MAX_REVISION}"
        version = doc.version
        if version is not None:
            version = readable(version, "version", VERSION_MAX)
        applying = doc.applying_revision
        if applying is not None and (
            isinstance(applying, bool)
            or not isinstance(applying, int)
            or not 0 <= applying <= MAX_REVISION
        ):
            return "bad answer: applying_revision is neither null nor a valid revision"
        apply_error = doc.apply_error
        if apply_error is not None:
            apply_error = readable(apply_error, "apply_error", APPLY_ERROR_MAX)
        return SyncReply(
            applied_revision=applied,
            version=version,
            stats_json=_raw_object(doc.stats, "stats", stats_limit),
            metadata_json=_raw_object(doc.metadata, "metadata", stats_limit),
            applying_revision=applying,
            apply_error=apply_error or None,
        )
    except ValueError as exc:
        return f"bad answer: {exc}"


class _Pool:
    """A sweep's side on the sync loop: `concurrency` tasks over the workers handed to it.

    Created on the API's loop; `feed` and `end` are called there; `run` runs on the lane's
    sync loop and hands batches of (worker id, outcome, seconds) back to `inbox`.
    """

    def __init__(
        self,
        syncer: Syncer,
        lane: _Lane,
        size: int,
        inbox: asyncio.Queue[list[tuple[str, Outcome, float]]],
    ) -> None:
        self.syncer = syncer
        self.lane = lane
        self.size = size
        self.inbox = inbox
        self.api_loop = asyncio.get_running_loop()
        self.sync_loop = lane.sync_loop.loop
        self.finished: asyncio.Future[None] = self.api_loop.create_future()
        # Used on the sync loop only (asyncio.Queue binds to the loop that first waits on it).
        self._todo: asyncio.Queue[Worker | None] = asyncio.Queue()
        self._out: list[tuple[str, Outcome, float]] = []
        self._handback: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[None] | None = None

    def feed(self, workers: list[Worker]) -> None:
        self.sync_loop.call_soon_threadsafe(self._put, workers)

    def end(self) -> None:
        self.sync_loop.call_soon_threadsafe(self._put, [None] * self.size)

    def _put(self, items: Sequence[Worker | None]) -> None:
        for item in items:
            self._todo.put_nowait(item)

    def start(self) -> None:
        self._task = self.lane.sync_loop.submit(self._run())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            await asyncio.gather(*(self._one() for _ in range(self.size)))
        finally:
            if self._handback is not None:
                self._handback.cancel()
            self._hand_back()
            settle_threadsafe(self.api_loop, self.finished)

    async def _one(self) -> None:
        while (w := await self._todo.get()) is not None:
            outcome, seconds = await self.syncer._safe_exchange(w, self.lane)
            self._out.append((w.id, outcome, seconds))
            if self._handback is None:
                self._handback = self.sync_loop.call_later(HANDBACK_DELAY, self._hand_back)

    def _hand_back(self) -> None:
        self._handback = None
        if self._out:
            batch, self._out = self._out, []
            with contextlib.suppress(RuntimeError):  # the API's loop is gone: nobody waits
                self.api_loop.call_soon_threadsafe(self.inbox.put_nowait, batch)


class _Lane:
    """One sync thread's own: its event loop, the connections it keeps and the TLS sessions
    it resumes (used on that loop only), for the workers `Syncer.lane_index` gives it."""

    def __init__(self, index: int, count: int, keep_max: int, keep_idle: float) -> None:
        self.sync_loop = SyncLoop("vectis-sync" if count == 1 else f"vectis-sync-{index + 1}")
        # The bound is the dashboard's: the lanes' pools count each other's (siblings).
        self.connections = sync_http.Connections(keep_max, keep_idle)
        self.sessions_kept = max(1, SESSIONS_KEPT // count)
        self.sessions: dict[str, tuple[tuple[frozenset[str], str, int], SSL.Session]] = {}
        self.exchanges = 0  # exchanges run on this lane


class Syncer:
    """Signs, sends and verifies syncs; records their outcomes through the store."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        timeout: float,
        concurrency: int,
        networks: tuple[Network, ...] = (),
        stats_limit: int = 16 * 1024,
        clock: Callable[[], float] = time.time,
        require_tls: bool = False,
        keys: KeyRing | None = None,
        keep_idle: float = sync_http.DEFAULT_KEEP_IDLE,
        keep_max: int = sync_http.DEFAULT_KEEP_MAX,
        threads: int = 1,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.timeout = timeout
        self.concurrency = concurrency
        self.networks = networks
        self._address_problems: dict[str, str | None] = {}
        self.stats_limit = stats_limit
        self.clock = clock
        self._inflight: dict[str, asyncio.Future[None]] = {}
        # Never more threads than syncs at once: each lane's pool runs one task at least.
        count = max(1, min(threads, concurrency))
        keep = sync_http.fd_share(keep_max)
        self.lanes = [_Lane(n, count, keep, keep_idle) for n in range(count)]
        for lane in self.lanes:
            lane.connections.siblings = tuple(
                other.connections for other in self.lanes if other is not lane
            )
        self.require_tls = require_tls
        self.keys = keys  # told of pins a sync promotes (a key rotation's end)
        self.tls_context = sync_http.client_context()  # one for every lane: thread-safe

    def lane_index(self, w: Worker) -> int:
        """The lane that syncs this worker, always the same while it serves TLS or plain HTTP
        (where its connection and session are kept): a TLS worker's by a hash of its id; a
        plain worker's is the first, as its sync is Python all through and holds the
        interpreter lock, so that a second thread would only add switches of that lock."""
        count = len(self.lanes)
        if count == 1 or w.tls_pin is None:
            return 0
        return zlib.crc32(w.id.encode()) % count

    def lane(self, w: Worker) -> _Lane:
        return self.lanes[self.lane_index(w)]

    async def start(self) -> None:
        """Start the sync threads, where every sync's connection is made and kept."""
        for lane in self.lanes:
            lane.sync_loop.start()

    async def close(self) -> None:
        """Cancel the exchanges still running, close the kept connections, end the threads."""
        for lane in self.lanes:
            with contextlib.suppress(RuntimeError):  # the sync loop has already ended
                # Runs before the stop that follows (callbacks run in order).
                lane.sync_loop.loop.call_soon_threadsafe(lane.connections.close)
            await lane.sync_loop.stop()

    def _address_problem(self, ip: str) -> str | None:
        """`worker_address_problem` of a stored address, remembered: a sweep asks it per sync."""
        try:
            return self._address_problems[ip]
        except KeyError:
            if len(self._address_problems) >= 1_000_000:
                self._address_problems.clear()
            problem = worker_address_problem(ipaddress.ip_address(ip), self.networks)
            self._address_problems[ip] = problem
            return problem

    async def _exchange(self, w: Worker, lane: _Lane) -> Outcome:
        """One signed sync. The causes it gives are coarse on purpose: the worker's record
        tells an operator what failed, not what answers on another host's port, so that an
        enrollment token is no port scanner. The details go to the log.
        """
        problem = self._address_problem(w.ip)
        if problem is not None:
            return f"refused: {problem}"
        lane.exchanges += 1
        tls = self._terms(w, lane)
        if tls is None and self.require_tls:
            return REQUIRE_TLS_CAUSE
        key = key_from_secret(w.secret)
        body = w.sync_body()
        nonce = new_nonce(os.urandom)
        auth = sign_request(key, w.id, "POST", "/sync", body, ts=int(self.clock()), nonce=nonce)
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        where = f"{w.ip}:{w.port}" if ":" not in w.ip else f"[{w.ip}]:{w.port}"
        unreachable = f"unreachable: no answer from {where} within {self.timeout:g} s"
        mismatch = f"identity mismatch: {where} gave no answer signed by this worker"
        limit = 2 * self.stats_limit + ANSWER_OVERHEAD
        try:
            answer = await sync_http.post(
                w.ip,
                w.port,
                "/sync",
                headers,
                body,
                timeout=self.timeout,
                limit=limit,
                tls=tls,
                pool=lane.connections,
            )
        except TimeoutError:
            log.info("sync %s: no answer within %g s", w.id, self.timeout)
            return unreachable
        except sync_http.AnswerTooLarge:
            return f"bad answer: larger than {limit} bytes"
        except sync_http.TlsFailed as exc:
            lane.sessions.pop(w.id, None)
            log.info("sync %s: %s", w.id, exc)
            return f"identity mismatch: {where} did not prove the pinned TLS key ({exc})"
        except sync_http.WireError as exc:
            log.info("sync %s: %s", w.id, exc)
            return mismatch
        except OSError as exc:
            log.info("sync %s: %s", w.id, (exc.strerror or type(exc).__name__).lower())
            return unreachable
        if tls is not None:
            self._keep_session(w, tls, lane)
        if answer.status != 200:
            log.info("sync %s: http %d", w.id, answer.status)
            return mismatch
        signature = answer.headers.get(SIGNATURE_HEADER.lower())
        try:
            verify_response(key, w.id, nonce, 200, answer.body, signature)
        except AuthFailure as exc:
            log.info("sync %s: %s", w.id, exc.reason)
            return mismatch
        reply = read_reply(w.id, answer.body, self.stats_limit)
        next_seen = tls is not None and tls.pin is not None and tls.pin == w.tls_pin_next
        if next_seen and isinstance(reply, SyncReply):
            reply = replace(reply, tls_pin_next_seen=w.tls_pin_next)
        return reply

    def _terms(self, w: Worker, lane: _Lane) -> sync_http.Pinned | None:
        """The TLS terms of a pinned worker (its last session resumed), None for a plain one."""
        if w.tls_pin is None:
            return None
        pins = frozenset((w.tls_pin, w.tls_pin_next) if w.tls_pin_next else (w.tls_pin,))
        kept = lane.sessions.get(w.id)
        # A session is resumed only on the terms it was made under: a rotation's end (fewer
        # pins) or a new address makes a full handshake, and the key is checked afresh.
        session = kept[1] if kept is not None and kept[0] == (pins, w.ip, w.port) else None
        return sync_http.Pinned(self.tls_context, pins, session)

    def _keep_session(self, w: Worker, tls: sync_http.Pinned, lane: _Lane) -> None:
        if tls.session is None:
            return
        sessions = lane.sessions
        if len(sessions) >= lane.sessions_kept and w.id not in sessions:
            sessions.clear()
        sessions[w.id] = ((tls.pins, w.ip, w.port), tls.session)

    async def _safe_exchange(self, w: Worker, lane: _Lane) -> tuple[Outcome, float]:
        """On `lane`'s loop: the connections and sessions used are that loop's own."""
        started = time.perf_counter()
        try:
            outcome = await self._exchange(w, lane)
        except Exception as exc:  # never let one worker's surprise break a sweep
            log.exception("sync of %s failed unexpectedly", w.id)
            outcome = f"unreachable: internal error ({type(exc).__name__})"
        return outcome, time.perf_counter() - started

    def running(self, worker_id: str) -> asyncio.Future[None] | None:
        """The sync of this worker under way, if any (done once its outcome is stored)."""
        return self._inflight.get(worker_id)

    def _claim(self, worker_id: str) -> asyncio.Future[None] | None:
        """Mark a sync of this worker as running; None when one already is."""
        if worker_id in self._inflight:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[worker_id] = done
        return done

    def _release(self, worker_ids: Iterable[str]) -> None:
        """The outcomes are stored: wake whoever joined these syncs."""
        for worker_id in worker_ids:
            done = self._inflight.pop(worker_id, None)
            if done is not None and not done.done():
                done.set_result(None)

    async def _write(self, outcomes: dict[str, tuple[Outcome, float]]) -> list[Worker]:
        now = datetime.fromtimestamp(self.clock(), UTC)

        def mutate(w: Worker) -> Any:
            outcome = outcomes[w.id][0]
            if isinstance(outcome, SyncReply):
                return after_sync(w, now, outcome)
            return after_failure(w, now, outcome)

        return await self.store.update_workers(list(outcomes), mutate, now)

    async def _record(self, outcomes: dict[str, tuple[Outcome, float]]) -> list[Worker]:
        """Store a batch of outcomes. Should one of them fail to store, the others are stored
        one by one and that worker alone is recorded as failed: no worker's answer can keep
        the rest of its batch from being recorded."""
        try:
            try:
                changed = await self._write(outcomes)
            except Exception:
                if len(outcomes) == 1 and isinstance(next(iter(outcomes.values()))[0], str):
                    raise  # a failure that cannot be stored: the store itself is at fault
                changed = []
                for worker_id, (outcome, seconds) in outcomes.items():
                    try:
                        changed += await self._write({worker_id: (outcome, seconds)})
                    except Exception:
                        log.exception("sync %s: its answer could not be stored", worker_id)
                        cause = "bad answer: the dashboard could not store it"
                        changed += await self._write({worker_id: (cause, seconds)})
        finally:
            self._release(outcomes)
        for w in changed:
            self.metrics.sync_done(w.status, outcomes[w.id][1])
            outcome = outcomes[w.id][0]
            promoted = isinstance(outcome, SyncReply) and outcome.tls_pin_next_seen is not None
            if promoted and self.keys is not None:
                self.keys.set_pins(w)  # the next key promoted: records read before follow
            if w.status == "failed":
                log.info("sync %s: failed: %s", w.id, w.last_error)
        return changed

    async def sync_one(self, w: Worker) -> Worker | None:
        """Sync one worker now and store the outcome; None when it was deleted meanwhile.

        When a sync of it is already running, wait for that one's stored outcome instead.
        """
        if self._claim(w.id) is None:
            await asyncio.shield(self._inflight[w.id])
            return await self.store.get_worker(w.id)
        try:
            lane = self.lane(w)
            outcome = await lane.sync_loop.submit(self._safe_exchange(w, lane))
        except BaseException:
            self._release([w.id])
            raise
        changed = await self._record({w.id: outcome})
        return changed[0] if changed else None

    def _pool_sizes(self, workers: Sequence[Worker]) -> list[int]:
        """Each lane's part of the sweep's syncs at once: the concurrency split in proportion
        to the workers it has (one task at least, which ends at once when it has none)."""
        total = len(workers)
        if len(self.lanes) == 1 or total == 0:
            return [max(1, min(self.concurrency, total))] * len(self.lanes)
        # Indexed, not iterated: a WithCurrentSecrets list looks its secrets up when iterated.
        homes = [self.lane_index(workers[n]) for n in range(total)]
        return [
            max(1, min(self.concurrency * homes.count(k) // total, homes.count(k)))
            for k in range(len(self.lanes))
        ]

    async def sweep(
        self,
        workers: Sequence[Worker],
        progress: Callable[[list[Worker]], None] | None = None,
    ) -> SweepCounts:
        """Sync every worker with bounded concurrency; store outcomes in batches.

        Workers are claimed here, a window ahead of the exchanges, and handed to the sync
        loop; their outcomes come back in batches and are stored here. `progress` sees each
        stored batch.
        """
        queue = iter(workers)
        window = 2 * self.concurrency + 64  # enough that the pools never wait on this loop
        inbox: asyncio.Queue[list[tuple[str, Outcome, float]]] = asyncio.Queue()
        lanes = self.lanes
        sizes = self._pool_sizes(workers)
        pools = [_Pool(self, lane, size, inbox) for lane, size in zip(lanes, sizes, strict=True)]
        finished = asyncio.gather(*(pool.finished for pool in pools))
        outstanding: set[str] = set()  # claimed, handed over, outcome not back yet
        pending: dict[str, tuple[Outcome, float]] = {}
        counts = {"synced": 0, "failed": 0, "outdated": 0}
        flushing: list[asyncio.Task[list[Worker]]] = []
        writing: asyncio.Task[list[Worker]] | None = None  # the batch the store is writing
        fed_all = False

        def flush(final: bool = False) -> bool:
            """Store what is pending, unless the store still writes the last batch: one of a
            sweep's batches at a time, so that a heartbeat's or a request's own write waits
            for one batch at most, never for a queue of them."""
            nonlocal writing
            if not pending or (writing is not None and not writing.done() and not final):
                return False
            batch = dict(pending)
            pending.clear()
            stored = asyncio.ensure_future(self._record(batch))
            if progress is not None:
                report = progress

                def done(fut: asyncio.Future[list[Worker]]) -> None:
                    if not fut.cancelled() and fut.exception() is None:
                        report(fut.result())

                stored.add_done_callback(done)
            stored.add_done_callback(lambda _: inbox.put_nowait([]))  # wakes the loop below
            flushing.append(stored)
            writing = stored
            return True

        def behind() -> bool:
            """The store still writes one batch and the next is full: claim no more workers
            until it is done, so that the sweep goes at the pace of the store."""
            return writing is not None and not writing.done() and len(pending) >= FLUSH_EVERY

        def feed() -> None:
            nonlocal fed_all
            batches: list[list[Worker]] = [[] for _ in lanes]
            while not fed_all and len(outstanding) < window:
                w = next(queue, None)
                if w is None:
                    fed_all = True
                elif self._claim(w.id) is not None:
                    outstanding.add(w.id)  # else already being synced; that sync stores its own
                    batches[self.lane_index(w)].append(w)
            for pool, batch in zip(pools, batches, strict=True):
                if batch:
                    pool.feed(batch)
                if fed_all:
                    pool.end()

        def received(batch: list[tuple[str, Outcome, float]]) -> None:
            for worker_id, outcome, seconds in batch:
                outstanding.discard(worker_id)
                pending[worker_id] = (outcome, seconds)

        for pool in pools:
            pool.start()
        try:
            feed()
            loop = asyncio.get_running_loop()
            waiting_since = 0.0
            while outstanding or not fed_all:
                received(await inbox.get())  # outcomes, or [] when the store wrote a batch
                if pending and not waiting_since:
                    waiting_since = loop.time()
                if (
                    len(pending) >= FLUSH_EVERY
                    or (pending and loop.time() - waiting_since >= FLUSH_AFTER)
                ) and flush():
                    waiting_since = 0.0
                if not fed_all and not behind():
                    feed()
            await asyncio.shield(finished)
        finally:
            if not finished.done():
                for pool in pools:
                    pool.cancel()
                # Only once the exchanges have stopped may another sync of their workers start.
                with contextlib.suppress(asyncio.CancelledError):
                    await finished
            while not inbox.empty():
                received(inbox.get_nowait())
            self._release(list(outstanding))
            flush(final=True)
            results = await asyncio.gather(*flushing, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
            for w in result:
                if w.status in counts:
                    counts[w.status] += 1
        return SweepCounts(total=len(workers), **counts)
