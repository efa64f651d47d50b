"""The dashboard's use-cases over the store, the DNS backend and the syncer.

`Dashboard` is the core object: the HTTP handlers only parse, call one method and render.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from vectis import __version__
from vectis.crypto.secrets import key_from_secret, secret_problem
from vectis.crypto.signing import (
    AuthFailure,
    NonceShareFull,
    NonceStoreFull,
    RequestVerifier,
    SignedRequest,
    sign_response,
)
from vectis.dashboard import auth, validate
from vectis.dashboard.budgets import CallBudget
from vectis.dashboard.dns import create_backend
from vectis.dashboard.dns.base import DNSBackend
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.model import (
    Token,
    Worker,
    after_config,
    after_dns,
    after_heartbeat,
    token_json,
    worker_json,
)
from vectis.dashboard.names import new_worker_id
from vectis.dashboard.settings import DashboardSettings
from vectis.dashboard.store import Registration, SQLiteStore, Store
from vectis.dashboard.syncer import SweepCounts, Syncer
from vectis.errors import (
    BadRequest,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from vectis.status import SyncStatus, iso
from vectis.untrusted import shown

log = logging.getLogger("vectis.dashboard")

DNS_TIMEOUT = 30.0
# Records handed to the backend at once: a backend that batches (Route53) turns a burst of
# registrations into a few change requests only if it sees them together.
DNS_BATCH = 1000
DNS_POLL = 1.0


def _with_current_secret(w: Worker, keys: dict[str, bytes]) -> Worker:
    """`w` with the secret the dashboard holds now: a record read earlier may predate a rotation."""
    key = keys.get(w.id)
    return w if key is None or key.hex() == w.secret else replace(w, secret=key.hex())


def _check_status(status: str | None) -> None:
    """The admin list's ?status= filter: absent, or one of the four statuses."""
    if status is not None and status not in {s.value for s in SyncStatus}:
        raise BadRequest("'status' must be one of pending, synced, failed, outdated")


class _WithCurrentSecrets(list[Worker]):
    """Workers listed when a sweep starts, each handed out with the secret current at its turn.

    A long sweep must not sign a sync with a secret that a rotation retired meanwhile.
    """

    def __init__(self, workers: list[Worker], keys: dict[str, bytes]) -> None:
        super().__init__(workers)
        self._keys = keys

    def __iter__(self) -> Iterator[Worker]:
        for w in super().__iter__():
            yield _with_current_secret(w, self._keys)


class Dashboard:
    """Registration, heartbeats, syncs, config, tokens and admin auth."""

    def __init__(
        self,
        settings: DashboardSettings,
        *,
        store: Store | None = None,
        dns: DNSBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store or SQLiteStore(settings.db_path)
        self.dns = dns or create_backend(settings.dns_backend, settings.zone, settings.dns_options)
        self.metrics = Metrics()
        self.syncer = Syncer(
            self.store,
            self.metrics,
            timeout=settings.sync_timeout,
            concurrency=settings.sync_concurrency,
            networks=settings.worker_networks,
            stats_limit=settings.worker_stats_limit,
            clock=clock,
        )
        self.sessions = auth.Sessions()
        self.limiter = auth.FailureLimiter(window=settings.auth_window)
        self.generated_admin_token: str | None = None
        self._admin_hash = ""
        self._enroll_hash = auth.token_hash(settings.enroll_token) if settings.enroll_token else ""
        self._keys: dict[str, bytes] = {}
        self.calls = CallBudget(settings.worker_calls_per_minute)
        self.verifier = RequestVerifier(
            self._keys.get,
            start_time=clock(),
            nonce_capacity=settings.nonce_capacity,
            nonce_share=self.calls.nonce_share(settings.nonce_capacity),
        )
        self._dns_wake = asyncio.Event()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, check DNS, load keys, settle the admin token; then ready."""
        await self.store.open()
        await self.dns.validate()
        await self._settle_admin_token()
        where = f"{self.settings.dns_backend}:{self.settings.zone}"
        if await self.store.get_meta("dns") != where:
            moved = await self.store.rezone(self.settings.zone)
            await self.store.set_meta("dns", where)
            if moved:
                log.info("DNS is now %s: %d worker records queued", where, moved)
        secrets_by_id = await self.store.worker_secrets()
        self._keys.update({i: key_from_secret(s) for i, s in secrets_by_id.items()})
        await self.syncer.start()

    async def stop(self) -> None:
        await self.syncer.close()
        await self.dns.close()
        await self.store.close()

    async def _settle_admin_token(self) -> None:
        given = self.settings.admin_token
        if given:
            self._admin_hash = auth.token_hash(given)
            await self.store.set_meta("admin_token_hash", self._admin_hash)
            return
        stored = await self.store.get_meta("admin_token_hash")
        if stored and not self.settings.new_admin_token:
            self._admin_hash = stored
            return
        token = auth.new_token()
        self._admin_hash = auth.token_hash(token)
        await self.store.set_meta("admin_token_hash", self._admin_hash)
        self.generated_admin_token = token

    # -- auth ---------------------------------------------------------------------------------

    def is_admin_token(self, token: str | None) -> bool:
        return bool(token) and auth.same_hash(auth.token_hash(token or ""), self._admin_hash)

    def refuse_blocked(self, address: str) -> None:
        """Raise TooManyRequests when `address` (or its network) may not present a credential.

        Called before a credential is checked: a blocked source is refused whatever it sends.
        """
        wait = self.limiter.retry_after(address, self.clock())
        if wait:
            raise auth.Blocked(f"too many failed attempts; retry in {wait} s", wait)

    def failed_attempt(self, address: str, why: str) -> Unauthorized:
        """Count a failed credential from `address`; the error to answer with.

        Only an address's first failure in a window is logged as it happens; the rest are
        counted and logged by `log_failure_counts` when the window closes.
        """
        first, network = self.limiter.failed(address, self.clock())
        if first:
            log.info(
                "auth failure from %s: %s (more from it are counted for %g s)",
                address,
                why,
                self.limiter.window,
            )
        if network is not None:
            log.warning(
                "auth failures from network %s reached %d: refusing its credentials for %g s",
                network,
                self.limiter.network_limit,
                self.limiter.window,
            )
        return auth.BadCredential(why)

    def log_failure_counts(self) -> None:
        """One line for each source whose counting window closed with more than one failure."""
        for r in self.limiter.reports(self.clock()):
            kind = "network" if r.network else "address"
            log.info(
                "auth failures from %s %s: %d in %g s, %d more refused while blocked",
                kind,
                r.source,
                r.failures,
                self.limiter.window,
                r.refused,
            )

    def login(self, address: str, body: bytes) -> tuple[str, str]:
        """Check the admin token of a login form; a new (session id, CSRF token)."""
        self.refuse_blocked(address)
        try:
            token = validate.json_object(body).get("token")
        except BadRequest:
            token = None
        if not isinstance(token, str) or not self.is_admin_token(token):
            raise self.failed_attempt(address, "bad admin token at login")
        sid, session = self.sessions.create(self.clock())
        return sid, session.csrf

    async def _enrollment(self, address: str, authorization: str | None) -> str | None:
        """The token ID an auto-register call presents (None: the start-time token)."""
        self.refuse_blocked(address)
        token = auth.bearer(authorization)
        if token is None:
            raise self.failed_attempt(address, "no enrollment token")
        digest = auth.token_hash(token)
        if self._enroll_hash and auth.same_hash(digest, self._enroll_hash):
            return None
        found = await self.store.find_token(digest)
        if found is None:
            raise self.failed_attempt(address, "unknown enrollment token")
        state = found.state(self.now())
        if state in ("revoked", "expired"):
            raise self.failed_attempt(address, f"enrollment token {found.id} is {state}")
        return found.id

    # -- worker-facing ------------------------------------------------------------------------

    async def register(
        self, address: str, authorization: str | None, body: bytes
    ) -> tuple[dict[str, Any], bool]:
        """SPEC section 3: (answer, created)."""
        try:
            token_id = await self._enrollment(address, authorization)
        except (Unauthorized, TooManyRequests) as exc:
            self.metrics.registrations[
                "rate_limited" if isinstance(exc, TooManyRequests) else "unauthorized"
            ] += 1
            raise
        try:
            ip, port, secret, hostname, version = validate.registration(
                validate.json_object(body), self.settings.worker_networks
            )
            reg = Registration(ip, port, secret, hostname, version, token_id)
            w, created = await self.store.register(
                reg, self.settings.zone, new_worker_id, self.now()
            )
        except Unauthorized:
            self.metrics.registrations["unauthorized"] += 1
            raise self.failed_attempt(address, "enrollment token used up") from None
        except Exception as exc:
            self.metrics.registrations[getattr(exc, "code", "error")] += 1
            raise
        self._keys[w.id] = key_from_secret(w.secret)
        self.metrics.registrations["created" if created else "updated"] += 1
        log.info(
            "%s worker %s at %s port %d",
            "registered" if created else "re-registered",
            w.id,
            w.ip,
            w.port,
        )
        if w.dns_status == "pending":
            self._dns_wake.set()
        answer = {"id": w.id, "subdomain": w.subdomain, "ip": w.ip}
        # The version a re-run of the served install.sh would install: `vectis status` shows it.
        answer["dashboard_version"] = __version__
        return answer, created

    async def heartbeat(
        self, worker_id: str, path: str, authorization: str | None, body: bytes
    ) -> tuple[bytes, str]:
        """SPEC section 7: verify, record, and answer (body, X-Vectis-Signature)."""
        try:
            req = self._verify_signed(worker_id, path, authorization, body, "heartbeat")
        except Unauthorized:
            self.metrics.heartbeats["unauthorized"] += 1
            raise
        # Answer with the key that signed the request, even if a rotation lands meanwhile.
        key = self._keys[worker_id]
        ip, port, version, applied = validate.heartbeat(
            validate.json_object(body), self.settings.worker_networks
        )
        at = self.now()

        def mutate(w: Worker) -> Any:
            return after_heartbeat(
                w,
                at,
                ip=ip or w.ip,
                port=port or w.port,
                version=version,
                applied_revision=applied,
            )

        changed = await self.store.update_workers([worker_id], mutate, at)
        if not changed:
            raise Unauthorized("worker was deleted")
        w = changed[0]
        self.metrics.heartbeats["ok"] += 1
        if w.dns_status == "pending":
            self._dns_wake.set()
        answer = b'{"status": "%s", "revision": %d, "config": %s, "dashboard_version": "%s"}' % (
            w.status.encode(),
            w.desired_revision,
            w.config_json.encode("utf-8"),
            __version__.encode(),
        )
        return answer, sign_response(key, worker_id, req.nonce, 200, answer, ts=int(self.clock()))

    async def rotate_secret(
        self, worker_id: str, path: str, authorization: str | None, body: bytes
    ) -> tuple[bytes, str]:
        """Switch a worker to the new secret it sent, signed with its current one.

        Answers (body, X-Vectis-Signature) signed with the new secret, which tells the worker
        the switch is done. A repeat signed with the new secret, naming it again, is a success
        with nothing to change: the worker was cut off before it could record the first answer.
        """
        req = self._verify_signed(worker_id, path, authorization, body, "rotation")
        new = validate.json_object(body).get("new_secret")
        problem = secret_problem(new)
        if problem is not None:
            raise BadRequest(f"'new_secret' {problem}")
        assert isinstance(new, str)
        new = new.lower()
        old = self._keys[worker_id].hex()
        changed = new != old
        if changed:
            w = await self.store.rotate_secret(worker_id, old, new, self.now())
            if w is None:
                raise Unauthorized("worker was deleted or its secret changed meanwhile")
            # From here on heartbeats and syncs use the new secret only.
            self._keys[worker_id] = key_from_secret(new)
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

    def _verify_signed(
        self, worker_id: str, path: str, authorization: str | None, body: bytes, what: str
    ) -> SignedRequest:
        """A worker's signed request for `worker_id`, or Unauthorized (the reason logged)."""
        now = self.clock()

        def within_budget(req: SignedRequest) -> None:
            wait = self.calls.take(req.worker_id, now)
            if wait:
                self.metrics.heartbeats["over_budget"] += 1
                raise TooManyRequests(
                    f"more than {self.calls.per_minute} signed calls a minute from this worker; "
                    f"retry in {wait} s",
                    wait,
                )

        try:
            req = self.verifier.verify(
                authorization, "POST", path, body, now=now, admit=within_budget
            )
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

    # -- admin --------------------------------------------------------------------------------

    def render(self, w: Worker) -> dict[str, Any]:
        return worker_json(w, dns_provisions=self.dns.provisions)

    async def _worker(self, worker_id: str) -> Worker:
        w = await self.store.get_worker(worker_id)
        if w is None:
            raise NotFound(f"no worker {worker_id[:64]!r}")
        return w

    async def list_workers(self, status: str | None) -> list[dict[str, Any]]:
        _check_status(status)
        return [self.render(w) for w in await self.store.list_workers(status)]

    async def list_workers_json(self, status: str | None) -> bytes:
        """GET /infra/workers as UTF-8 JSON bytes, rendered by the store off the event loop."""
        _check_status(status)
        return await self.store.list_workers_json(status, self.dns.provisions)

    async def show_worker(self, worker_id: str) -> dict[str, Any]:
        w = await self._worker(worker_id)
        doc = self.render(w)
        doc["config"] = json.loads(w.config_json)
        doc["history"] = await self.store.history(w.id)
        return doc

    async def sync_worker(self, worker_id: str) -> dict[str, Any]:
        stored = await self._worker(worker_id)
        w = await self.syncer.sync_one(_with_current_secret(stored, self._keys))
        if w is None:
            raise NotFound(f"worker {worker_id[:64]!r} was deleted during the sync")
        return self.render(w)

    async def sync_all(self) -> SweepCounts:
        started = time.perf_counter()
        workers = _WithCurrentSecrets(await self.store.list_workers(), self._keys)
        counts = await self.syncer.sweep(workers)
        log.info(
            "synced %d workers in %.2f s: %d synced, %d outdated, %d failed",
            counts.total,
            time.perf_counter() - started,
            counts.synced,
            counts.outdated,
            counts.failed,
        )
        return counts

    async def set_config(self, worker_id: str, body: bytes) -> dict[str, Any]:
        config_json = validate.config(body)
        at = self.now()
        changed = await self.store.update_workers(
            [worker_id], lambda w: after_config(w, at, config_json), at
        )
        if not changed:
            raise NotFound(f"no worker {worker_id[:64]!r}")
        log.info("worker %s: config revision %d set", worker_id, changed[0].desired_revision)
        return self.render(changed[0])

    async def delete_worker(self, worker_id: str) -> dict[str, Any]:
        w = await self.store.delete_worker(worker_id)
        if w is None:
            raise NotFound(f"no worker {worker_id[:64]!r}")
        self._keys.pop(w.id, None)
        self.calls.forget(w.id)
        log.info("deleted worker %s", w.id)
        if self.dns.provisions:
            try:
                await asyncio.wait_for(self.dns.delete(w.subdomain), DNS_TIMEOUT)
            except Exception as exc:
                log.warning("DNS delete of %s failed (%s); retrying later", w.subdomain, exc)
                retry = min(2.0, self.settings.dns_retry_max)
                await self.store.add_dns_orphan(w.subdomain, self.clock() + retry)
                self._dns_wake.set()
        return {"id": w.id, "deleted": True}

    async def create_token(self, body: bytes) -> dict[str, Any]:
        doc = validate.json_object(body) if body else {}
        now = self.now()
        description, expires_at, max_uses = validate.token_request(doc, now)
        plain = auth.new_token()
        token = Token(
            id=secrets.token_hex(4),
            token_hash=auth.token_hash(plain),
            description=description,
            created_at=iso(now),
            expires_at=expires_at,
            max_uses=max_uses,
            uses=0,
            revoked_at=None,
        )
        await self.store.create_token(token)
        log.info("enrollment token %s created", token.id)
        return {**token_json(token, now), "token": plain}

    async def list_tokens(self) -> list[dict[str, Any]]:
        now = self.now()
        return [token_json(t, now) for t in await self.store.list_tokens()]

    async def revoke_token(self, token_id: str) -> dict[str, Any]:
        token = await self.store.revoke_token(token_id, self.now())
        if token is None:
            raise NotFound(f"no token {token_id[:64]!r}")
        log.info("enrollment token %s revoked", token.id)
        return token_json(token, self.now())

    async def metrics_text(self) -> str:
        return self.metrics.render(await self.store.status_counts())

    # -- background ---------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        """Sync every worker each `sync_interval` seconds (the first sweep after one interval)."""
        while True:
            await asyncio.sleep(self.settings.sync_interval)
            try:
                await self.sync_all()
            except Exception:
                log.exception("periodic sync sweep failed")

    async def _dns_attempt(self, w: Worker) -> float:
        """One try at `w`'s record; the time of its next try (inf when done)."""
        error: str | None = None
        try:
            await asyncio.wait_for(self.dns.ensure(w.subdomain, w.ip), DNS_TIMEOUT)
        except Exception as exc:
            error = shown(str(exc)) or type(exc).__name__
            log.warning("DNS record %s -> %s failed: %s", w.subdomain, w.ip, error)
        at = self.now()
        tried_ip = w.ip

        def mutate(current: Worker) -> Any:
            if current.ip != tried_ip:
                return None  # it moved meanwhile; the new address is already queued
            new = after_dns(current, at, error is None, error, self.settings.dns_retry_max)
            return new, []

        changed = await self.store.update_workers([w.id], mutate, at)
        return changed[0].dns_next_at if changed and error is not None else float("inf")

    async def _dns_orphan(self, name: str, attempts: int) -> float:
        try:
            await asyncio.wait_for(self.dns.delete(name), DNS_TIMEOUT)
        except Exception as exc:
            delay = min(self.settings.dns_retry_max, 2.0 ** min(attempts + 1, 20))
            log.warning("DNS delete of %s failed again (%s)", name, exc)
            await self.store.set_dns_orphan(name, attempts + 1, self.clock() + delay)
            return self.clock() + delay
        await self.store.set_dns_orphan(name, None, 0)
        return float("inf")

    async def dns_forever(self) -> None:
        """Provision pending DNS records, retrying failures with exponential backoff."""
        if not self.dns.provisions:
            return
        while True:
            self._dns_wake.clear()
            pause = DNS_POLL
            try:
                now = self.clock()
                due = await self.store.dns_due(now, DNS_BATCH)
                orphans = await self.store.dns_orphans_due(now, DNS_BATCH)
                retries = await asyncio.gather(
                    *(self._dns_attempt(w) for w in due),
                    *(self._dns_orphan(n, a) for n, a in orphans),
                )
                if len(due) == DNS_BATCH or len(orphans) == DNS_BATCH:
                    continue
                # Sleep until the soonest retry when it comes before the next poll.
                pause = max(0.01, min([pause, *(t - self.clock() for t in retries)]))
            except Exception:
                log.exception("DNS reconciler pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dns_wake.wait(), timeout=pause)
