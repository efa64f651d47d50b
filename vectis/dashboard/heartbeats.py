"""What a registered worker calls, signed with its secret: heartbeats and secret rotation.

Each signed call is verified (docs/protocol.md, Signed requests), drawn from the worker's own
budget of calls a minute before its nonce is kept, and answered signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vectis.crypto.secrets import key_from_secret
from vectis.crypto.signing import (
    NONCE_TTL,
    AuthFailure,
    NonceShareFull,
    NonceStoreFull,
    RequestVerifier,
    SignedRequest,
    sign_response,
)
from vectis.dashboard import validate
from vectis.dashboard.budgets import CallBudget
from vectis.dashboard.keyring import KeyRing
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.model import Worker, after_heartbeat
from vectis.dashboard.replicas import MemoryNonces, NonceLedger, Shared
from vectis.dashboard.settings import DashboardSettings
from vectis.dashboard.store import Store
from vectis.dashboard.syncer import Syncer
from vectis.dashboard.worker_cache import Entry, WorkerCache, heartbeat_answer, seen_only
from vectis.errors import ServiceUnavailable, TooManyRequests, Unauthorized
from vectis.status import iso

log = logging.getLogger("vectis.dashboard")


SEEN_FLUSH = 1.0  # seconds between writes of last-seen times
SEEN_SLICE = 1000  # last-seen times written in one transaction


class WorkerCalls:
    """`POST /infra/workers/<id>/heartbeat` and `.../rotate-secret`."""

    def __init__(
        self,
        settings: DashboardSettings,
        store: Store,
        keys: KeyRing,
        syncer: Syncer,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        dns_due: Callable[[], None],
        shared: Shared | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.syncer = syncer
        self.metrics = metrics
        self.clock = clock
        self.dns_due = dns_due
        self.calls = CallBudget(settings.worker_calls_per_minute)
        share = self.calls.nonce_share(settings.nonce_capacity)
        self.verifier = RequestVerifier(
            keys.get, start_time=clock(), nonce_capacity=settings.nonce_capacity
        )
        # Replicas on one database share the nonces (a replay to another one is refused);
        # the call budget stays each replica's own.
        self.shared = shared is not None
        self._seen: dict[str, str] = {}  # worker id -> last seen (ISO), not yet stored
        self._iso = (0, "")  # a second and its ISO text
        self._flusher: asyncio.Task[None] | None = None
        # Rows as heartbeats last found them, kept true by every write to the store.
        self.rows = WorkerCache()
        store.watchers = (*store.watchers, self.rows)
        ledger = shared.nonces if shared is not None else MemoryNonces
        self.nonces: NonceLedger = ledger(settings.nonce_capacity, share)

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_seen(), name="vectis-seen")

    async def _flush_seen(self) -> None:
        """Write the last-seen times of heartbeats that changed nothing else, once a second."""
        while self._seen:
            await asyncio.sleep(SEEN_FLUSH)
            await self.write_seen()

    async def write_seen(self) -> None:
        """Store the last-seen times gathered since the last write (also at shutdown).

        In slices of SEEN_SLICE workers: a second's worth at 14,000 heartbeats a second
        written at once held the interpreter long enough to stall answers by 90 ms.
        """
        if not self._seen:
            return
        seen, self._seen = list(self._seen.items()), {}
        for start in range(0, len(seen), SEEN_SLICE):
            try:
                await self.store.mark_seen(dict(seen[start : start + SEEN_SLICE]))
            except Exception:
                log.exception(
                    "storing %d workers' last-seen times failed; kept for the next try",
                    len(seen) - start,
                )
                for worker_id, at in seen[start:]:
                    self._seen.setdefault(worker_id, at)
                return

    def _second(self, now: float) -> str:
        """`iso` of the second `now` is in, formatted once a second, not once a heartbeat."""
        second = int(now)
        if second != self._iso[0]:
            self._iso = second, iso(datetime.fromtimestamp(second, UTC))
        return self._iso[1]

    async def close(self) -> None:
        """Write what is still gathered and stop the writer."""
        await self.rows.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.write_seen()

    def forget(self, worker_id: str) -> None:
        """A deleted worker's budget."""
        self.calls.forget(worker_id)

    async def heartbeat(
        self, worker_id: str, path: str, authorization: str | None, body: bytes
    ) -> tuple[bytes, str]:
        """Verify, record, and answer (body, X-Vectis-Signature)."""
        try:
            req = await self._verify(worker_id, path, authorization, body, "heartbeat")
        except Unauthorized:
            self.metrics.heartbeats["unauthorized"] += 1
            raise
        # Answer with the key that signed the request, even if a rotation lands meanwhile.
        key = self.keys.get(worker_id)
        assert key is not None  # the request verified with it
        entry = self.rows.get(worker_id)
        if (
            entry is not None
            and entry.quiet == body
            and (not self.shared or entry.row.secret == key.hex())
        ):
            return self._unchanged(entry, key, req.nonce)
        doc = validate.json_object(body)
        ip, port, version, applied = validate.heartbeat(doc, self.settings.worker_networks)
        pin, pin_next = validate.heartbeat_pins(doc)
        apply_error = validate.heartbeat_apply_error(doc)
        at = datetime.fromtimestamp(self.clock(), UTC)

        def mutate(w: Worker) -> Any:
            if self.shared and w.secret != key.hex():
                return None  # rotated through another replica: the key held here is retired
            return after_heartbeat(
                w,
                at,
                ip=ip or w.ip,
                port=port or w.port,
                version=version,
                applied_revision=applied,
                tls_pin=pin,
                tls_pin_next=pin_next,
                apply_error=apply_error,
            )

        # A heartbeat that changes nothing but the time the worker was last seen answers from
        # a read; those times are written together, once a second (`_flush_seen`). Anything
        # else it changes is written before the answer.
        w = None
        if entry is not None:
            current: Worker | None = entry.row
        else:
            stamp = self.rows.stamp()
            current = await self.store.get_worker(worker_id)
            entry = self.rows.put(current, stamp) if current is not None else None
            self.rows.start(self.store)
        if current is not None:
            out = mutate(current)
            if out is not None and not out[1] and seen_only(current, out[0]):
                w = out[0]
                self._seen[worker_id] = iso(at)
                self._start_flusher()
                if entry is not None:
                    entry.quiet = body  # the same bytes again change nothing again
        if w is None:
            changed = await self.store.update_workers([worker_id], mutate, at)
            if not changed:
                if self.shared:
                    await self._reload_key(worker_id)
                raise Unauthorized("worker was deleted or its secret changed")
            w = changed[0]
            self._quiet_next(w, body, mutate)
        if current is not None and (w.tls_pin, w.tls_pin_next) != (
            current.tls_pin,
            current.tls_pin_next,
        ):
            await self._pins_changed(w)
        self.metrics.heartbeats["ok"] += 1
        if w.dns_status == "pending":
            self.dns_due()
        answer = heartbeat_answer(w)
        return answer, sign_response(key, worker_id, req.nonce, 200, answer, ts=int(self.clock()))

    async def _pins_changed(self, w: Worker) -> None:
        """New pins stored (a TLS key rotation's step): syncs from now on accept them.

        A sync that set out with the earlier pins ends before the answer, on which the worker
        may switch keys (docs/protocol.md#tls-key-rotation).
        """
        self.keys.set_pins(w)
        log.info("worker %s: TLS pins %s, next %s", w.id, w.tls_pin, w.tls_pin_next)
        running = self.syncer.running(w.id)
        if running is not None:
            await asyncio.shield(running)

    def _quiet_next(self, w: Worker, body: bytes, mutate: Callable[[Worker], Any]) -> None:
        """After a heartbeat's write: keep the row it stored (nothing ran since: it is the
        latest), and whether the same bytes again change nothing against it (most often so),
        so that the next one is answered from that row."""
        entry = self.rows.put(w, self.rows.stamp())
        if entry is not None:
            out = mutate(entry.row)
            if out is not None and not out[1] and seen_only(entry.row, out[0]):
                entry.quiet = body

    def _unchanged(self, entry: Entry, key: bytes, nonce: str) -> tuple[bytes, str]:
        """The answer to a heartbeat whose bytes changed nothing against this row before."""
        w = entry.row
        now = self.clock()
        self._seen[w.id] = self._second(now)
        self._start_flusher()
        self.metrics.heartbeats["ok"] += 1
        if w.dns_status == "pending":
            self.dns_due()
        answer, answer_hash = entry.answer
        signature = sign_response(key, w.id, nonce, 200, answer, ts=int(now), body_hash=answer_hash)
        return answer, signature

    async def rotate_secret(
        self, worker_id: str, path: str, authorization: str | None, body: bytes
    ) -> tuple[bytes, str]:
        """Switch a worker to the new secret it sent, signed with its current one.

        Answers (body, X-Vectis-Signature) signed with the new secret, which tells the worker
        the switch is done. A repeat signed with the new secret, naming it again, is a success
        with nothing to change: the worker was cut off before it could record the first answer.
        """
        req = await self._verify(worker_id, path, authorization, body, "rotation")
        new = validate.new_secret(validate.json_object(body))
        current = self.keys.get(worker_id)
        assert current is not None  # the request verified with it
        old = current.hex()
        changed = new != old
        if changed:
            at = datetime.fromtimestamp(self.clock(), UTC)
            w = await self.store.rotate_secret(worker_id, old, new, at)
            if w is None:
                raise Unauthorized("worker was deleted or its secret changed meanwhile")
            # From here on heartbeats and syncs use the new secret only.
            self.keys.set(worker_id, new)
            log.info("worker %s: secret rotated", worker_id)
            # A sync signed with the old secret may still be on its way: answer only after it,
            # so the worker, which drops the old secret on this answer, has seen its last use.
            running = self.syncer.running(worker_id)
            if running is not None:
                await asyncio.shield(running)
        answer = b'{"id": "%s", "changed": %s}' % (
            worker_id.encode(),
            b"true" if changed else b"false",
        )
        key = key_from_secret(new)
        return answer, sign_response(key, worker_id, req.nonce, 200, answer, ts=int(self.clock()))

    async def _verify(
        self, worker_id: str, path: str, authorization: str | None, body: bytes, what: str
    ) -> SignedRequest:
        """A worker's signed request for `worker_id`, or Unauthorized (the reason logged).

        The outcomes of the documented order (docs/protocol.md#signed-requests: the
        verifier's checks up to the timestamp, then the nonce, the budget, and only then is
        the nonce kept): a replay is a 401 and spends nothing, a call over budget is a 429 and
        keeps no nonce. The nonce is checked and kept in one step (`NonceLedger.remember`;
        on replicas one batched statement, the check being the insert's conflict: a heartbeat
        waits for one round trip and one commit, not two), so the budget is taken first and
        given back when the nonce turns out a replay; a call over budget is checked for a
        replay before its 429.
        """
        now = self.clock()

        def over_budget(wait: int) -> TooManyRequests:
            self.metrics.heartbeats["over_budget"] += 1
            return TooManyRequests(
                f"more than {self.calls.per_minute} signed calls a minute from this worker; "
                f"retry in {wait} s",
                wait,
            )

        try:
            req = await self._authenticate(worker_id, path, authorization, body, now)
            wait = self.calls.take(req.worker_id, now)
            if wait:
                if await self.nonces.seen(req.nonce, now):
                    raise AuthFailure("replayed nonce")
                raise over_budget(wait)
            try:
                kept = await self.nonces.remember(req.nonce, req.ts + NONCE_TTL, now, req.worker_id)
            except NonceStoreFull:
                if not await self.nonces.seen(req.nonce, now):
                    raise
                kept = False  # a replay is a 401 whether or not there is room
            if not kept:
                self.calls.give_back(req.worker_id)
                raise AuthFailure("replayed nonce")
        except AuthFailure as exc:
            log.info("%s for %s refused: %s", what, worker_id[:64], exc.reason)
            raise Unauthorized(exc.reason) from None
        except NonceStoreFull:
            raise ServiceUnavailable("too many recent requests; retry shortly") from None
        except NonceShareFull:
            raise TooManyRequests(
                "this worker holds its whole share of recent requests; retry in a minute", 60
            ) from None
        if req.worker_id != worker_id:
            log.info("%s path names %s but is signed by %s", what, worker_id[:64], req.worker_id)
            raise Unauthorized("signed for another worker")
        return req

    async def _authenticate(
        self, worker_id: str, path: str, authorization: str | None, body: bytes, now: float
    ) -> SignedRequest:
        """Steps 1 to 5; a replica that does not know the worker's key, or holds an old one,
        reads it from the store once and tries again (it registered or rotated elsewhere)."""
        try:
            return self.verifier.authenticate(authorization, "POST", path, body, now=now)
        except AuthFailure:
            if not self.shared or not await self._reload_key(worker_id):
                raise
        return self.verifier.authenticate(authorization, "POST", path, body, now=now)

    async def _reload_key(self, worker_id: str) -> bool:
        """The stored secret of `worker_id` into the key ring; whether that changed it."""
        w = await self.store.get_worker(worker_id)
        held = self.keys.get(worker_id)
        if w is None:
            self.keys.drop(worker_id)
            return False
        if held is not None and held.hex() == w.secret:
            return False
        self.keys.set(worker_id, w.secret)
        return True
