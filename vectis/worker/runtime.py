"""The daemon's view of `worker.conf`: reloaded when a command changes it, written under lock.

A cheap `stat()` (inode, size, mtime_ns) tells whether a command wrote the file (a
registration, a new IP, a rotated secret); the file is then read again, in a thread. A busy
`/sync` looks at most once per `RECHECK_INTERVAL`, and at once when a request fails to
authenticate, so a registration or rotation just made is never refused for a stale view.
Every write is a `locked_conf()` read-modify-write, in a thread, so the daemon never loses what
a command wrote. `last_sync` alone is kept in memory and written at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vectis.atomicfile import FileWatch
from vectis.config import WorkerConf
from vectis.configfile import SECRET_NAME, locked_conf, read_conf
from vectis.crypto.signing import (
    DEFAULT_NONCE_CAPACITY,
    AuthFailure,
    RequestVerifier,
    SignedRequest,
)
from vectis.errors import VectisError
from vectis.status import SyncRecord, SyncStatus, iso, succeeded
from vectis.worker.apply import Applier
from vectis.worker.host import ServeSettings, facts_changed
from vectis.worker.rotation import SecretFiles

log = logging.getLogger("vectis.worker")

FLUSH_INTERVAL = 60.0
#: How long a `/sync` that hands a new revision to the apply command waits for its outcome
#: before answering that the revision is being applied: well under the dashboard's timeout
#: (VECTIS_SYNC_TIMEOUT, default 5 s), long enough for a quick reload to be answered at once.
APPLY_WAIT = 0.5
#: How long the hot path trusts its last look at worker.conf and the secret files: under load
#: three stat() calls per request cost about 7% of the daemon's time (issue 16).
RECHECK_INTERVAL = 0.5


def _later(a: str | None, b: str | None) -> str | None:
    """The later of two ISO 8601 UTC times written by `vectis.status.iso` (they sort as text)."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What a successful `/sync` left behind."""

    worker_id: str
    applied_revision: int
    applied_now: bool


class WorkerRuntime:
    """Holds the current `worker.conf`, the secret's key and the request verifier."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        settings: ServeSettings,
        *,
        conf: WorkerConf | None = None,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.key = key
        self.settings = settings
        self.clock = clock
        self._monotonic = monotonic
        self._next_look = float("-inf")
        self._conf_file = FileWatch(path)
        self._use(conf if conf is not None else read_conf(path))
        self.verifier = RequestVerifier(
            self._key_for,
            start_time=clock(),
            nonce_capacity=settings.nonce_capacity or DEFAULT_NONCE_CAPACITY,
        )
        # While a secret rotation is pending the dashboard may sign with either key; one nonce
        # store serves both, so a nonce spent under one key is spent for the other too.
        self.secrets = SecretFiles(path.with_name(SECRET_NAME), key)
        self._pending_verifier = RequestVerifier(
            self._pending_key_for, start_time=clock(), nonce_capacity=1
        )
        self._pending_verifier.nonces = self.verifier.nonces
        self._pending_at: float | None = None
        self._reload_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self.applied_hook: Callable[[], None] | None = None  # after each apply attempt
        self.applier: Applier | None = None
        if settings.apply.enabled:
            self.applier = Applier(
                settings.apply, path, done=self._apply_ended, monotonic=monotonic
            )

    def _key_for(self, worker_id: str) -> bytes | None:
        # Only this worker's own id is known; before registration nothing is.
        return self.key if worker_id == self.conf.state.id else None

    def _pending_key_for(self, worker_id: str) -> bytes | None:
        return self.secrets.pending if worker_id == self.conf.state.id else None

    def verify(
        self, header: str | None, method: str, path: str, body: bytes
    ) -> tuple[SignedRequest, bytes]:
        """Verify a signed request; (the request, the key that signed it, to sign the answer)."""
        try:
            return self.verifier.verify(header, method, path, body, now=self.clock()), self.key
        except AuthFailure as first:
            pending = self.secrets.pending
            if pending is None:
                raise
            try:
                req = self._pending_verifier.verify(header, method, path, body, now=self.clock())
            except AuthFailure as second:
                raise AuthFailure(f"{first.reason} (pending secret: {second.reason})") from None
            return req, pending

    def authenticated(
        self, header: str | None, method: str, path: str, body: bytes
    ) -> tuple[SignedRequest, bytes] | None:
        """The hot path of `authenticate`, without a coroutine: the verified request when no
        look at the files is due; None when `authenticate` must decide (due, or refused)."""
        if self._monotonic() >= self._next_look:
            return None
        try:
            return self.verify(header, method, path, body)
        except AuthFailure:
            return None

    async def authenticate(
        self, header: str | None, method: str, path: str, body: bytes
    ) -> tuple[SignedRequest, bytes]:
        """`verify()` against the files as last looked at; after a refusal, look again first.

        The files are looked at when the last look is `RECHECK_INTERVAL` old; a refused request
        looks at once, and is verified again if something changed.
        """
        if self._monotonic() >= self._next_look:
            await self.refresh()
        try:
            return self.verify(header, method, path, body)
        except AuthFailure:
            if not await self.refresh():
                raise
        return self.verify(header, method, path, body)

    @property
    def worker_id(self) -> str | None:
        return self.conf.state.id

    @property
    def applying(self) -> int | None:
        """The newest revision being applied or waiting to be (docs/protocol.md#sync)."""
        return None if self.applier is None else self.applier.applying

    async def _apply_ended(self) -> None:
        await self.refresh()
        if self.applied_hook is not None:
            self.applied_hook()

    def offer(self, revision: int, config: dict[str, Any]) -> None:
        """Hand a received revision to the applier when it is newer than the applied one."""
        if self._to_apply(revision):
            assert self.applier is not None
            self.applier.offer(revision, config, self.conf.state.id or "")

    def _to_apply(self, revision: int) -> bool:
        applier = self.applier
        return (
            applier is not None
            and revision > self.conf.state.applied_revision
            and applier.wants(revision)
        )

    @property
    def pending_last_sync(self) -> str | None:
        """The last successful sync not yet written to worker.conf (ISO 8601 UTC)."""
        at = self._pending_at
        return None if at is None else iso(datetime.fromtimestamp(at, UTC))

    def record(self) -> SyncRecord:
        """The sync record as the daemon knows it: the file's, with the unwritten last_sync."""
        rec = self.conf.state.sync
        last = _later(rec.last_sync, self.pending_last_sync)
        return rec if last == rec.last_sync else replace(rec, last_sync=last)

    async def refresh(self) -> bool:
        """Read `worker.conf` and the secret files again if they changed; whether any did."""
        self._next_look = self._monotonic() + RECHECK_INTERVAL
        before = (self.key, self.secrets.pending, self.conf)
        await self._reload()
        after = (self.key, self.secrets.pending, self.conf)
        return any(a is not b for a, b in zip(before, after, strict=True))

    async def _reload(self) -> None:
        if self.secrets.refresh():
            self.key = self.secrets.current
        if not self._conf_file.changed():
            return
        async with self._reload_lock:
            sig = self._conf_file.stamp()  # before reading: a later change is seen next time
            if sig == self._conf_file.seen:
                return
            try:
                conf = await asyncio.to_thread(read_conf, self.path)
            except VectisError as exc:
                log.error("keeping the last good worker.conf: %s", exc.message)
                self._conf_file.seen = sig
                return
            if conf.state.id != self.conf.state.id:
                log.info("worker id is now %s", conf.state.id or "(none: not registered)")
            self._use(conf)
            self._conf_file.seen = sig
            pending = self.pending_last_sync
            if pending is not None and pending <= (conf.state.sync.last_sync or ""):
                self._pending_at = None

    def _use(self, conf: WorkerConf) -> None:
        self.conf = conf
        why = facts_changed(conf, self.settings.port, self.settings.ip)
        # What a successful sync leaves behind, computed once per version of the file.
        steady = SyncRecord(
            SyncStatus.SYNCED if why is None else SyncStatus.OUTDATED,
            last_sync=conf.state.sync.last_sync,
        )
        # Whether a success leaves the record as it is (then only last_sync moves, in memory),
        # and the outcome such a sync answers with: both fixed until the file changes.
        self._settled = conf.state.sync == steady
        self._quiet_outcome = SyncOutcome(conf.state.id or "", conf.state.applied_revision, False)

    def _outdated_because(self, conf: WorkerConf) -> str | None:
        return facts_changed(conf, self.settings.port, self.settings.ip)

    def noted(self, revision: int) -> SyncOutcome | None:
        """The hot path of `sync_succeeded`, without a coroutine: the outcome of a sync that
        changes nothing but last_sync (kept in memory); None when it must be written."""
        if self._to_apply(revision) or self._needs_write(revision, self.clock()):
            return None
        return self._quiet_outcome

    async def sync_succeeded(self, revision: int, config: dict[str, Any]) -> SyncOutcome:
        """Record a verified `/sync`: apply a newer revision and move the status, persisted.

        With an apply file or command the revision goes to the applier, and the answer waits
        at most APPLY_WAIT for its outcome.
        """
        if self._to_apply(revision):
            assert self.applier is not None
            self.offer(revision, config)
            await self.applier.settle(revision, APPLY_WAIT)
        at = self.clock()
        worker_id = self.conf.state.id or ""
        if not self._needs_write(revision, at):
            return SyncOutcome(worker_id, self.conf.state.applied_revision, False)
        async with self._write_lock:
            await self.refresh()
            if not self._needs_write(revision, at):
                return SyncOutcome(worker_id, self.conf.state.applied_revision, False)
            now = datetime.fromtimestamp(at, UTC)
            applied, applied_now = await asyncio.to_thread(
                self._write_sync, revision, config, now, self.pending_last_sync
            )
            await self.refresh()
        if applied_now:
            log.info("applied config revision %d", applied)
        return SyncOutcome(worker_id, applied, applied_now)

    def _needs_write(self, revision: int, at: float) -> bool:
        """Whether this sync changes more than last_sync; if not, note its time in memory."""
        # The hot path: no config to apply and the record already what a success leaves.
        stored_here = self.applier is None and revision > self.conf.state.applied_revision
        if stored_here or not self._settled:
            return True
        if self._pending_at is None or at > self._pending_at:
            self._pending_at = at
        return False

    def _write_sync(
        self, revision: int, config: dict[str, Any], now: datetime, pending: str | None
    ) -> tuple[int, bool]:
        with locked_conf(self.path) as conf:
            applied_now = self.applier is None and revision > conf.state.applied_revision
            if applied_now:
                conf.config = config
                conf.state.applied_revision = revision
            rec = conf.state.sync
            rec = replace(rec, last_sync=_later(rec.last_sync, pending))
            why = self._outdated_because(conf)
            conf.state.sync, change = succeeded(rec, now, up_to_date=why is None)
            if change is not None:
                conf.record(replace(change, cause=why or "reached by the dashboard"))
            return conf.state.applied_revision, applied_now

    def _write_last_sync(self, last_sync: str) -> None:
        with locked_conf(self.path) as conf:
            rec = conf.state.sync
            conf.state.sync = replace(rec, last_sync=_later(rec.last_sync, last_sync))

    async def flush(self) -> None:
        """Write the in-memory last_sync if it is newer than the file's."""
        pending = self.pending_last_sync
        if pending is None or not self.conf.registered:
            return
        async with self._write_lock:
            try:
                await asyncio.to_thread(self._write_last_sync, pending)
            except VectisError as exc:
                log.error("cannot record the last sync time: %s", exc.message)
                return
            if self.pending_last_sync == pending:
                self._pending_at = None
            await self.refresh()

    async def flush_every(self, interval: float = FLUSH_INTERVAL) -> None:
        """Write last_sync lazily, at most once per `interval` (runs until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            await self.flush()
