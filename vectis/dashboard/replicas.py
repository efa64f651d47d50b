"""What dashboard replicas on one database share, behind small interfaces.

| part | in one process (SQLite) | shared by replicas (PostgreSQL, postgres_replicas.py) |
| --- | --- | --- |
| `NonceLedger` | `MemoryNonces`: signing.NonceStore | a `nonces` table |
| `SessionStore` | `MemorySessions`: auth.Sessions | a `sessions` table |
| `SweepClaims` | none: each sweep syncs the whole fleet | a due time per worker, claimed |
| `Leadership` | `AlwaysLeader` | a PostgreSQL advisory lock on a connection of its own |

The parts that use them (heartbeats.py, access.py, sweeps.py, dns/provisioning.py) do not
care which they get. A `Shared` bundle comes from `Store.shared()`: None keeps everything in
memory, as one dashboard on SQLite always has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from vectis.crypto.signing import NonceStore
from vectis.dashboard import auth
from vectis.dashboard.model import Worker


class NonceLedger(ABC):
    """The nonces of accepted signed calls, each kept until its expiry; bounded.

    The semantics of signing.NonceStore: `capacity` live nonces in all, at most `share` per
    owner (a worker id); NonceStoreFull / NonceShareFull when there is no room.
    """

    @abstractmethod
    async def seen(self, nonce: str, now: float) -> bool:
        """Whether `nonce` is held and not yet expired."""

    @abstractmethod
    async def remember(self, nonce: str, expires_at: int, now: float, owner: str) -> bool:
        """Keep `nonce` until `expires_at`; False when a live entry holds it already (a replay
        that raced this one past `seen`)."""


class MemoryNonces(NonceLedger):
    """One process's nonces, in memory."""

    def __init__(self, capacity: int, share: int | None) -> None:
        self.store = NonceStore(capacity, share)

    async def seen(self, nonce: str, now: float) -> bool:
        return self.store.seen(nonce, now)

    async def remember(self, nonce: str, expires_at: int, now: float, owner: str) -> bool:
        if self.store.seen(nonce, now):
            return False
        self.store.remember(nonce, expires_at, now, owner)
        return True


class SessionStore(ABC):
    """The web page's sessions by opaque cookie value, each with its CSRF token; bounded."""

    @abstractmethod
    async def create(self, now: float) -> tuple[str, auth.Session]: ...

    @abstractmethod
    async def get(self, sid: str | None, now: float) -> auth.Session | None: ...

    @abstractmethod
    async def drop(self, sid: str | None) -> None: ...


class MemorySessions(SessionStore):
    """One process's sessions, in memory: a restart asks the page to log in again."""

    def __init__(self) -> None:
        self.sessions = auth.Sessions()

    async def create(self, now: float) -> tuple[str, auth.Session]:
        return self.sessions.create(now)

    async def get(self, sid: str | None, now: float) -> auth.Session | None:
        return self.sessions.get(sid, now)

    async def drop(self, sid: str | None) -> None:
        self.sessions.drop(sid)


class SweepClaims(ABC):
    """The periodic sweep split between replicas: each worker claimed by one replica per
    interval. A claim makes the worker due again one interval later, so the workers a killed
    replica had claimed fall to the others then."""

    @abstractmethod
    async def claim(self, interval: float, limit: int) -> list[Worker]:
        """Up to `limit` due workers, now claimed by this replica for `interval` seconds."""

    @abstractmethod
    async def next_due(self) -> float | None:
        """Seconds until the next worker is due (<= 0: one is); None when there is none."""


class Leadership(ABC):
    """Whether this replica is the one that may run a loop only one may run at a time."""

    #: False: there is only this process, nothing to coordinate with.
    shared: bool = True

    @abstractmethod
    async def held(self) -> bool:
        """Whether this replica holds the lead now (taking it when free)."""

    async def release(self) -> None:
        """Give the lead up (at shutdown)."""


class AlwaysLeader(Leadership):
    shared = False

    async def held(self) -> bool:
        return True


@dataclass
class Shared:
    """What replicas on one store share; `Store.shared()` gives it, or None."""

    #: the ledger of nonces for a capacity and a per-worker share
    nonces: Callable[[int, int | None], NonceLedger]
    sessions: SessionStore
    sweeps: SweepClaims
    dns_lead: Leadership

    async def close(self) -> None:
        await self.dns_lead.release()
