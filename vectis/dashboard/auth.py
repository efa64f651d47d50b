"""Admin token, web sessions with CSRF tokens, and the per-address failure limiter.

Tokens are high-entropy random strings, so one SHA-256 is the right hash: a slow KDF would
only slow down every API call. Sessions live in memory; a restart asks the page to log in again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

SESSION_COOKIE = "vectis_session"
CSRF_HEADER = "X-Vectis-CSRF"
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 10_000


def token_hash(token: str) -> str:
    """The stored form of an admin or enrollment token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A fresh token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def bearer(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, else None."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer ") :].strip()
    return token or None


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float


class Sessions:
    """Web-page sessions by opaque cookie value; bounded, oldest dropped first."""

    def __init__(self, ttl: float = SESSION_TTL, capacity: int = MAX_SESSIONS) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def create(self, now: float) -> tuple[str, Session]:
        while len(self._by_id) >= self.capacity:
            self._by_id.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=now + self.ttl)
        self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None, now: float) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if session.expires <= now:
            del self._by_id[sid]
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)


class FailureLimiter:
    """Counts failed attempts per source address in a fixed window.

    Only failures are counted, and a valid credential is never checked against the count,
    so nobody's failures slow down a caller that holds a good token.
    """

    def __init__(self, limit: int = 10, window: float = 60.0, capacity: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def blocked(self, address: str, now: float) -> bool:
        entry = self._seen.get(address)
        return entry is not None and entry[0] + self.window > now and entry[1] >= self.limit

    def failed(self, address: str, now: float) -> None:
        start, count = self._seen.pop(address, (now, 0))
        if start + self.window <= now:
            start, count = now, 0
        self._seen[address] = (start, count + 1)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def retry_after(self, address: str, now: float) -> int:
        entry = self._seen.get(address)
        return 1 if entry is None else max(1, int(entry[0] + self.window - now) + 1)
