"""The signed client to workers' `POST /sync`, and sweeps over many workers at once.

Each sync is one short connection through `wire`; a sweep runs a fixed pool of `concurrency` tasks
over the worker list (never one task per worker) and writes outcomes to the store in
batches. A worker already being synced is joined, never synced twice at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vectis.crypto.secrets import key_from_secret
from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    AuthFailure,
    new_nonce,
    sign_request,
    verify_response,
)
from vectis.dashboard import wire
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.model import SyncReply, Worker, after_failure, after_sync
from vectis.dashboard.store import Store

log = logging.getLogger("vectis.dashboard.sync")

RESPONSE_LIMIT = 1024 * 1024
FLUSH_EVERY = 500

Outcome = SyncReply | str  # a verified reply, or the cause of the failure


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


def _url(w: Worker) -> str:
    host = f"[{w.ip}]" if ":" in w.ip else w.ip
    return f"http://{host}:{w.port}/sync"


def read_reply(worker_id: str, raw: bytes) -> Outcome:
    """Decode a verified 200 answer; a malformed one is a failure, never an exception."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return "http 200: the answer is not JSON"
    if not isinstance(doc, dict):
        return "http 200: the answer is not a JSON object"
    if doc.get("worker_id", worker_id) != worker_id:
        return f"identity mismatch: the worker answered as {str(doc.get('worker_id'))[:64]!r}"
    applied = doc.get("applied_revision")
    if isinstance(applied, bool) or not isinstance(applied, int) or applied < 0:
        return "http 200: the answer has no valid applied_revision"
    version = doc.get("version")
    stats, metadata = doc.get("stats"), doc.get("metadata")
    return SyncReply(
        applied_revision=min(applied, 2**62),
        version=str(version)[:64] if version is not None else None,
        stats_json=json.dumps(stats) if isinstance(stats, dict) else None,
        metadata_json=json.dumps(metadata) if isinstance(metadata, dict) else None,
    )


class Syncer:
    """Signs, sends and verifies syncs; records their outcomes through the store."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        timeout: float,
        concurrency: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.timeout = timeout
        self.concurrency = concurrency
        self.clock = clock
        self._inflight: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        """Nothing to open: each sync uses its own short connection (see `wire`)."""

    async def close(self) -> None:
        """Nothing to close: a sweep's connections end with their exchanges."""

    async def _exchange(self, w: Worker) -> Outcome:
        key = key_from_secret(w.secret)
        body = w.sync_body()
        nonce = new_nonce(os.urandom)
        auth = sign_request(key, w.id, "POST", "/sync", body, ts=int(self.clock()), nonce=nonce)
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        try:
            answer = await wire.post(
                w.ip, w.port, "/sync", headers, body, timeout=self.timeout, limit=RESPONSE_LIMIT
            )
        except TimeoutError:
            return f"timeout: no answer within {self.timeout:g} s"
        except wire.WireError as exc:
            return f"unreachable: {w.ip}:{w.port}: {exc}"
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
            return f"unreachable: {w.ip}:{w.port}: {reason}"
        if answer.status != 200:
            if answer.status in (401, 403):
                return (
                    f"identity mismatch: the worker at {w.ip}:{w.port} refused "
                    f"this worker's signature (http {answer.status})"
                )
            return f"http {answer.status}"
        signature = answer.headers.get(SIGNATURE_HEADER.lower())
        try:
            verify_response(key, w.id, nonce, 200, answer.body, signature)
        except AuthFailure as exc:
            return f"identity mismatch: {exc.reason}"
        return read_reply(w.id, answer.body)

    async def _safe_exchange(self, w: Worker) -> tuple[Outcome, float]:
        started = time.perf_counter()
        try:
            outcome = await self._exchange(w)
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

    async def _record(self, outcomes: dict[str, tuple[Outcome, float]]) -> list[Worker]:
        now = datetime.fromtimestamp(self.clock(), UTC)

        def mutate(w: Worker) -> Any:
            outcome = outcomes[w.id][0]
            if isinstance(outcome, SyncReply):
                return after_sync(w, now, outcome)
            return after_failure(w, now, outcome)

        try:
            changed = await self.store.update_workers(list(outcomes), mutate, now)
        finally:
            self._release(outcomes)
        for w in changed:
            self.metrics.sync_done(w.status, outcomes[w.id][1])
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
            outcome = await self._safe_exchange(w)
        except BaseException:
            self._release([w.id])
            raise
        changed = await self._record({w.id: outcome})
        return changed[0] if changed else None

    async def sweep(self, workers: Sequence[Worker]) -> SweepCounts:
        """Sync every worker with bounded concurrency; store outcomes in batches."""
        queue = iter(workers)
        pending: dict[str, tuple[Outcome, float]] = {}
        counts = {"synced": 0, "failed": 0, "outdated": 0}
        flushing: list[asyncio.Task[list[Worker]]] = []

        def flush() -> None:
            if pending:
                batch = dict(pending)
                pending.clear()
                flushing.append(asyncio.ensure_future(self._record(batch)))

        async def run() -> None:
            for w in queue:
                if self._claim(w.id) is None:
                    continue  # already being synced; that sync stores its own outcome
                try:
                    pending[w.id] = await self._safe_exchange(w)
                except BaseException:
                    self._release([w.id])
                    raise
                if len(pending) >= FLUSH_EVERY:
                    flush()

        pool = [asyncio.ensure_future(run()) for _ in range(min(self.concurrency, len(workers)))]
        try:
            await asyncio.gather(*pool)
        finally:
            for task in pool:
                task.cancel()
            flush()
            results = await asyncio.gather(*flushing, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
            for w in result:
                if w.status in counts:
                    counts[w.status] += 1
        return SweepCounts(total=len(workers), **counts)
