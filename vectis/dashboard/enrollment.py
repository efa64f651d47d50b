"""Enrollment: a worker registers itself with an enrollment token (docs/protocol.md, Registration).

The token is the start-time one (`VECTIS_TOKEN`, no use limit) or one made through the API
(stored hashed, with an optional expiry and use limit). Identity is the secret: the same
secret registering again gets its id back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from vectis import __version__
from vectis.dashboard import auth, validate
from vectis.dashboard.access import Access
from vectis.dashboard.keyring import KeyRing
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.names import new_worker_id
from vectis.dashboard.settings import DashboardSettings
from vectis.dashboard.store import Registration, Store
from vectis.errors import TooManyRequests, Unauthorized

log = logging.getLogger("vectis.dashboard")


class Enrollment:
    """`POST /infra/workers/auto-register`."""

    def __init__(
        self,
        settings: DashboardSettings,
        store: Store,
        access: Access,
        keys: KeyRing,
        metrics: Metrics,
        *,
        now: Callable[[], datetime],
        dns_due: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.access = access
        self.keys = keys
        self.metrics = metrics
        self.now = now
        self.dns_due = dns_due
        self._start_hash = auth.token_hash(settings.enroll_token) if settings.enroll_token else ""

    async def _token_id(self, address: str, authorization: str | None) -> str | None:
        """The token ID a call presents (None: the start-time token); refused otherwise."""
        self.access.refuse_blocked(address)
        token = auth.bearer(authorization)
        if token is None:
            raise self.access.failed_attempt(address, "no enrollment token")
        digest = auth.token_hash(token)
        if self._start_hash and auth.same_hash(digest, self._start_hash):
            return None
        found = await self.store.find_token(digest)
        if found is None:
            raise self.access.failed_attempt(address, "unknown enrollment token")
        state = found.state(self.now())
        if state in ("revoked", "expired"):
            raise self.access.failed_attempt(address, f"enrollment token {found.id} is {state}")
        return found.id

    async def register(
        self, address: str, authorization: str | None, body: bytes
    ) -> tuple[dict[str, Any], bool]:
        """Register or re-register a worker: (answer, created)."""
        try:
            token_id = await self._token_id(address, authorization)
        except (Unauthorized, TooManyRequests) as exc:
            self.metrics.registrations[
                "rate_limited" if isinstance(exc, TooManyRequests) else "unauthorized"
            ] += 1
            raise
        try:
            doc = validate.json_object(body)
            ip, port, secret, hostname, version, pin = validate.registration(
                doc, self.settings.worker_networks
            )
            labels = validate.registration_labels(doc)
            reg = Registration(ip, port, secret, hostname, version, token_id, pin, labels)
            w, created = await self.store.register(
                reg, self.settings.zone, new_worker_id, self.now()
            )
        except Unauthorized:
            self.metrics.registrations["unauthorized"] += 1
            raise self.access.failed_attempt(address, "enrollment token used up") from None
        except Exception as exc:
            self.metrics.registrations[getattr(exc, "code", "error")] += 1
            raise
        self.keys.set(w.id, w.secret)
        self.keys.follow_pins(w)
        self.metrics.registrations["created" if created else "updated"] += 1
        log.info(
            "%s worker %s at %s port %d",
            "registered" if created else "re-registered",
            w.id,
            w.ip,
            w.port,
        )
        if w.dns_status == "pending":
            self.dns_due()
        # The version a re-run of the served install.sh would install: `vectis status` shows it.
        answer = {
            "id": w.id,
            "subdomain": w.subdomain,
            "ip": w.ip,
            "dashboard_version": __version__,
        }
        return answer, created
