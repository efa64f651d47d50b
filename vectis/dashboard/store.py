"""The dashboard's store: the one async interface every implementation fills.

SQLite (`sqlite_store.py`) is the embedded one; PostgreSQL (`postgres_store.py`) the one
several dashboards can share. Methods raise Conflict/Unauthorized for rule breaches;
everything else they raise is the store's own failure. Texts hold no NUL character (the wire
refuses control characters, and PostgreSQL cannot store one).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vectis.dashboard.groups import ConfigGroup, labels_json
from vectis.dashboard.model import Changes, Token, Worker, moved, new_worker, pinned, worker_json
from vectis.dashboard.selectors import Selector
from vectis.status import StatusChange, SyncStatus, iso

if TYPE_CHECKING:
    from vectis.dashboard.replicas import Shared
    from vectis.dashboard.worker_cache import WorkerCache

#: Status changes kept per worker.
HISTORY_KEEP = 200


@dataclass(frozen=True, slots=True)
class WorkerQuery:
    """A selection of workers in list order (created_at, id), one page after `after`.

    `q` is a case-insensitive substring of the id, subdomain, hostname or IP; `selector` a
    label selector. `limit` None means every match.
    """

    status: str | None = None
    dns_status: str | None = None
    q: str | None = None
    after: tuple[str, str] | None = None
    limit: int | None = None
    selector: Selector | None = None

    def matches(self, w: Worker) -> bool:
        if self.status is not None and w.status != self.status:
            return False
        if self.selector is not None and not self.selector.matches(json.loads(w.labels_json)):
            return False
        if self.dns_status is not None and w.dns_status != self.dns_status:
            return False
        if self.after is not None and (w.created_at, w.id) <= self.after:
            return False
        if self.q:
            needle = self.q.lower()
            texts = (w.id, w.subdomain, w.hostname or "", w.ip)
            return any(needle in t.lower() for t in texts)
        return True


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts of the fleet's workers by status and by DNS status."""

    total: int
    by_status: dict[str, int]
    by_dns_status: dict[str, int]


Mutation = Callable[[Worker], tuple[Worker, Changes] | None]


def secret_hash(secret: str) -> str:
    """What the unique index holds: SHA-256 of the lowercase secret."""
    return hashlib.sha256(secret.lower().encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated auto-register request."""

    ip: str
    port: int
    secret: str
    hostname: str | None
    version: str | None
    token_id: str | None  # None: the VECTIS_TOKEN given at start (no use limit)
    tls_pin: str | None = None  # SHA-256 of the worker's TLS public key; None: plain HTTP
    labels: dict[str, str] | None = None  # None: a re-registration keeps the stored labels

    def again(self, old: Worker, now: datetime) -> tuple[Worker, dict[str, str] | None]:
        """`old`, the worker holding this secret, registering again: at the new address, with
        the hostname, version and pin given; and its labels to store when they change (None:
        kept, and then no group's selection of it can have changed)."""
        w = moved(old, self.ip, self.port, now)
        if self.hostname is not None or self.version is not None:
            w = replace(
                w,
                hostname=self.hostname or w.hostname,
                version=self.version or w.version,
                updated_at=iso(now),
            )
        w = pinned(w, self.tls_pin, None, now)
        if self.labels is None or labels_json(self.labels) == w.labels_json:
            return w, None
        return replace(w, labels_json=labels_json(self.labels), updated_at=iso(now)), self.labels

    def first(self, worker_id: str, zone: str, now: datetime) -> tuple[Worker, StatusChange]:
        """The new worker this registration makes (its groups' config not merged yet), and the
        first line of its history."""
        w = new_worker(
            worker_id,
            zone,
            self.ip,
            self.port,
            self.secret.lower(),
            self.hostname,
            self.version,
            now,
            self.tls_pin,
            labels_json(self.labels or {}),
        )
        pending = SyncStatus.PENDING
        return w, StatusChange(iso(now), pending, pending, "registered")


class Store(ABC):
    """Everything the dashboard keeps. Methods raise Conflict/Unauthorized for rule breaches."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    def unavailable(self, exc: BaseException) -> bool:
        """Whether `exc` says the store cannot be reached now (a restart, a cut connection):
        the caller answers 503 and retries, rather than report an internal error."""
        return False

    async def healthy(self) -> bool:
        """Whether the store can serve now (/healthz); cheap, and bounded in time."""
        return True

    def shared(self) -> Shared | None:
        """What dashboard replicas on this store share (replicas.py); None: this store has
        one dashboard, which keeps nonces, sessions and its sweep in memory."""
        return None

    #: What keeps workers' rows in memory (worker_cache.py), told of every write to them.
    watchers: tuple[WorkerCache, ...] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Each write method a store defines reports what it wrote to `watchers` when it
        returns, so no caller has to remember to (worker_cache.py)."""
        super().__init_subclass__(**kwargs)
        from vectis.dashboard.worker_cache import report_writes

        report_writes(cls)

    async def workers_written_elsewhere(
        self, since: object
    ) -> tuple[object, Collection[str] | None]:
        """(what to pass next time, the ids of workers' rows another process may have
        written since the check that returned `since`, or None: any); `since` None: the
        first check. This default cannot tell, so any."""
        return None, None

    async def mark_seen(self, seen: Mapping[str, str]) -> None:
        """Set each worker's last_sync (and updated_at) to its time in `seen` (ISO), where
        that is later than the stored one; nothing else changes. Workers gone are skipped."""

        def later(w: Worker) -> tuple[Worker, Changes] | None:
            at = seen[w.id]
            if w.last_sync is not None and w.last_sync >= at:
                return None
            return replace(w, last_sync=at, updated_at=at), []

        await self.update_workers(list(seen), later, datetime.now(UTC))

    @abstractmethod
    async def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    async def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    async def register(
        self, reg: Registration, zone: str, new_id: Callable[[], str], now: datetime
    ) -> tuple[Worker, bool]:
        """Store a new worker (True) or update the one with this secret (False)."""

    @abstractmethod
    async def get_worker(self, worker_id: str) -> Worker | None: ...

    @abstractmethod
    async def list_workers(self, status: str | None = None) -> list[Worker]: ...

    async def list_workers_json(self, status: str | None, dns_provisions: bool) -> bytes:
        """`{"workers": [...]}` as UTF-8 JSON: each worker as `worker_json` renders it."""
        workers = await self.list_workers(status)
        doc = [worker_json(w, dns_provisions=dns_provisions) for w in workers]
        return json.dumps({"workers": doc}).encode("utf-8")

    async def page_workers(self, query: WorkerQuery) -> list[Worker]:
        """The workers `query` selects, in list order; a store may answer it in its engine."""
        found = [w for w in await self.list_workers() if query.matches(w)]
        return found if query.limit is None else found[: query.limit]

    async def summary(self, selector: Selector | None = None) -> Summary:
        """Counts by status and DNS status (of the workers `selector` selects); a store may
        count in its engine."""
        by_status: dict[str, int] = {}
        by_dns: dict[str, int] = {}
        workers = await self.page_workers(WorkerQuery(selector=selector))
        for w in workers:
            by_status[w.status] = by_status.get(w.status, 0) + 1
            by_dns[w.dns_status] = by_dns.get(w.dns_status, 0) + 1
        return Summary(len(workers), by_status, by_dns)

    @abstractmethod
    async def worker_secrets(self) -> dict[str, str]: ...

    # -- labels and config groups (groups.py holds the merge) -----------------------------------

    @abstractmethod
    async def set_worker_settings(
        self,
        worker_id: str,
        now: datetime,
        *,
        labels: dict[str, str] | None = None,
        own_config_json: str | None = None,
    ) -> Worker | None:
        """Replace a worker's labels and/or own config, and merge its desired config again
        (a new revision only when that changed); None when there is no such worker."""

    @abstractmethod
    async def list_groups(self) -> list[ConfigGroup]:
        """Every config group, by name."""

    @abstractmethod
    async def get_group(self, name: str) -> ConfigGroup | None: ...

    @abstractmethod
    async def count_selected(self, selector: Selector) -> int:
        """How many workers `selector` selects."""

    @abstractmethod
    async def put_group(
        self, name: str, selector: str, priority: int, config_json: str, now: datetime
    ) -> tuple[ConfigGroup, bool, int]:
        """Create or replace a group and merge again the config of every worker it selected
        or selects: (the group, created, workers given a new revision). Conflict past
        GROUPS_MAX groups. Replicas changing groups at once are serialised."""

    @abstractmethod
    async def delete_group(self, name: str, now: datetime) -> tuple[ConfigGroup, int] | None:
        """Delete a group and merge again its workers' config: (the group, workers given a
        new revision); None when there is no such group."""

    @abstractmethod
    async def update_workers(
        self, ids: Sequence[str], mutate: Mutation, now: datetime
    ) -> list[Worker]:
        """Apply `mutate` to each worker in one transaction; return the changed ones."""

    @abstractmethod
    async def rotate_secret(
        self, worker_id: str, old: str, new: str, now: datetime
    ) -> Worker | None:
        """Replace `old` with `new` (None: no such worker holds `old`); Conflict if taken."""

    @abstractmethod
    async def delete_worker(self, worker_id: str) -> Worker | None: ...

    @abstractmethod
    async def history(self, worker_id: str, limit: int = 100) -> list[dict[str, str]]: ...

    @abstractmethod
    async def dns_due(self, now: float, limit: int) -> list[Worker]: ...

    @abstractmethod
    async def rezone(self, zone: str) -> int:
        """Move every worker's subdomain under `zone` and queue its DNS record again."""

    @abstractmethod
    async def add_dns_orphan(self, name: str, next_at: float) -> None: ...

    @abstractmethod
    async def dns_orphans_due(self, now: float, limit: int) -> list[tuple[str, int]]: ...

    @abstractmethod
    async def set_dns_orphan(self, name: str, attempts: int | None, next_at: float) -> None:
        """Reschedule an orphan record, or forget it when `attempts` is None."""

    @abstractmethod
    async def create_token(self, token: Token) -> None: ...

    @abstractmethod
    async def find_token(self, token_hash: str) -> Token | None: ...

    @abstractmethod
    async def list_tokens(self) -> list[Token]: ...

    @abstractmethod
    async def revoke_token(self, token_id: str, now: datetime) -> Token | None: ...

    @abstractmethod
    async def status_counts(self) -> dict[str, int]: ...
