"""Who may call the admin API: the admin token, the page's sessions, and the failure guard.

A source (an address, or its network) that failed too often is refused before any credential
it sends is checked; failures are counted and logged as counts, not one line each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vectis.dashboard import auth, validate
from vectis.dashboard.replicas import MemorySessions, SessionStore
from vectis.dashboard.settings import DashboardSettings
from vectis.dashboard.store import Store
from vectis.errors import BadRequest, Unauthorized

log = logging.getLogger("vectis.dashboard")


class Access:
    """The admin token's hash, web sessions and the failure limiter."""

    def __init__(
        self,
        settings: DashboardSettings,
        store: Store,
        clock: Callable[[], float],
        sessions: SessionStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        # Replicas on one database share theirs: a login on one is a session on every one.
        self.sessions = sessions or MemorySessions()
        self.limiter = auth.FailureLimiter(window=settings.auth_window)
        self.generated_admin_token: str | None = None
        self._admin_hash = ""

    async def settle_admin_token(self) -> None:
        """The given token replaces the stored hash; else the stored one; else a new one."""
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

    async def login(self, address: str, body: bytes) -> tuple[str, str]:
        """Check the admin token of a login form; a new (session id, CSRF token)."""
        self.refuse_blocked(address)
        try:
            token = validate.json_object(body).get("token")
        except BadRequest:
            token = None
        if not isinstance(token, str) or not self.is_admin_token(token):
            raise self.failed_attempt(address, "bad admin token at login")
        sid, session = await self.sessions.create(self.clock())
        return sid, session.csrf
