"""Admin token, web sessions with CSRF tokens, and the failure limiter (address, network).

Tokens are high-entropy random strings, so one SHA-256 is the right hash: a slow KDF would
only slow down every API call. Sessions live in memory; a restart asks the page to log in again.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from vectis.errors import TooManyRequests, Unauthorized

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


#: The least an admin or enrollment token given to the dashboard must have. A generated token
#: (`new_token`) has 43 URL-safe characters, far above it.
TOKEN_MIN_LENGTH = 16
TOKEN_MIN_DISTINCT = 8


def token_weakness(token: str) -> str | None:
    """Why a token chosen by an operator is too weak to guard the dashboard, or None."""
    if len(token) < TOKEN_MIN_LENGTH:
        return f"it has {len(token)} characters; at least {TOKEN_MIN_LENGTH} are needed"
    if len(set(token)) < TOKEN_MIN_DISTINCT:
        return (
            f"it has {len(set(token))} distinct characters; at least "
            f"{TOKEN_MIN_DISTINCT} are needed"
        )
    return None


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


class BadCredential(Unauthorized):
    """A failed credential: counted by the limiter and logged as a count, not one by one."""


class Blocked(TooManyRequests):
    """A credential refused unread because its source is over a limit; counted, not logged."""


#: Failed attempts one address may make in a window before it is refused.
ADDRESS_LIMIT = 10
#: Failed attempts one network (IPv4 /24, IPv6 /64) may make in a window, all its addresses
#: together: higher than one address's, so one guesser does not lock out its neighbours, yet
#: a guesser who spreads over the addresses of its network gains at most three addresses' worth.
NETWORK_LIMIT = 30
#: The window (seconds) over which failures are counted; a block lasts until it ends.
WINDOW = 60.0
IPV4_PREFIX = 24
IPV6_PREFIX = 64


def network_of(address: str) -> str:
    """The network an address is limited with: its IPv4 /24 or IPv6 /64 (text kept as is)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(slots=True)
class _Window:
    start: float
    failures: int = 0
    #: attempts refused while blocked: not counted as failures, only reported
    refused: int = 0


@dataclass(frozen=True, slots=True)
class FailureReport:
    """What one source did in one closed window, for one summary line in the log."""

    source: str
    network: bool
    failures: int
    refused: int


class _Counter:
    """Fixed windows per key, oldest first; a closed window becomes a report."""

    def __init__(self, limit: int, window: float, capacity: int) -> None:
        self.limit = limit
        self.window = window
        self.capacity = capacity
        self.windows: OrderedDict[str, _Window] = OrderedDict()

    def current(self, key: str, now: float) -> _Window | None:
        found = self.windows.get(key)
        return found if found is not None and found.start + self.window > now else None

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0: not blocked)."""
        found = self.current(key, now)
        if found is None or found.failures < self.limit:
            return 0.0
        return found.start + self.window - now

    def open(self, key: str, now: float, closed: list[tuple[str, _Window]]) -> _Window:
        found = self.current(key, now)
        if found is not None:
            return found
        old = self.windows.pop(key, None)
        if old is not None:
            closed.append((key, old))
        # Windows are opened in time order, so the oldest one is always first.
        found = self.windows[key] = _Window(now)
        while len(self.windows) > self.capacity:
            closed.append(self.windows.popitem(last=False))
        return found

    def close_expired(self, now: float, closed: list[tuple[str, _Window]]) -> None:
        while self.windows:
            key, first = next(iter(self.windows.items()))
            if first.start + self.window > now:
                return
            del self.windows[key]
            closed.append((key, first))


class FailureLimiter:
    """Counts failed credentials per address and per network in fixed windows.

    A source over either limit is refused whatever it sends, a valid token included, until
    its window ends; that is the only way to stop guessing rather than merely slow it. A
    valid token from any other network is never slowed by these failures. The counts are
    handed out as reports when a window closes, so a guesser costs one log line per window,
    not one per guess.
    """

    def __init__(
        self,
        limit: int = ADDRESS_LIMIT,
        window: float = WINDOW,
        capacity: int = 100_000,
        network_limit: int = NETWORK_LIMIT,
    ) -> None:
        self.window = window
        self.limit = limit
        self.network_limit = network_limit
        self._addresses = _Counter(limit, window, capacity)
        self._networks = _Counter(network_limit, window, capacity)
        self._closed: list[FailureReport] = []

    def retry_after(self, address: str, now: float) -> int:
        """Whole seconds until `address` may present a credential again (0: it may now).

        Counts the attempt as refused when it is blocked.
        """
        wait = 0.0
        for counter, key in ((self._addresses, address), (self._networks, network_of(address))):
            blocked_for = counter.blocked_for(key, now)
            if blocked_for > 0:
                counter.windows[key].refused += 1
                wait = max(wait, blocked_for)
        return math.ceil(wait)

    def blocked(self, address: str, now: float) -> bool:
        network = network_of(address)
        return (
            self._addresses.blocked_for(address, now) > 0
            or self._networks.blocked_for(network, now) > 0
        )

    def failed(self, address: str, now: float) -> tuple[bool, str | None]:
        """Count a failure: (whether it is the address's first in its window, the network
        that this failure brought to its limit, if any)."""
        closed: list[tuple[str, _Window]] = []
        mine = self._addresses.open(address, now, closed)
        mine.failures += 1
        self._report(closed, network=False)
        closed = []
        network = network_of(address)
        theirs = self._networks.open(network, now, closed)
        theirs.failures += 1
        self._report(closed, network=True)
        reached = network if theirs.failures == self._networks.limit else None
        return mine.failures == 1, reached

    def reports(self, now: float) -> list[FailureReport]:
        """Reports of every window closed by now that holds more than its first failure."""
        closed: list[tuple[str, _Window]] = []
        self._addresses.close_expired(now, closed)
        self._report(closed, network=False)
        closed = []
        self._networks.close_expired(now, closed)
        self._report(closed, network=True)
        out, self._closed = self._closed, []
        return out

    def _report(self, closed: list[tuple[str, _Window]], *, network: bool) -> None:
        for key, w in closed:
            # One failure was logged when it happened; a network is reported once it blocked.
            limit = self._networks.limit if network else 2
            if w.failures >= limit or w.refused:
                self._closed.append(FailureReport(key, network, w.failures, w.refused))
