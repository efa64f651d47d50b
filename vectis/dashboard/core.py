"""`Dashboard`: the one object the HTTP handlers call, a facade over parts with names.

| part | module | what |
| --- | --- | --- |
| `access` | access.py | the admin token, the page's sessions, the failure guard |
| `enrollment` | enrollment.py | registrations with an enrollment token |
| `worker_calls` | heartbeats.py | a worker's signed heartbeats and secret rotation |
| `admin` | admin.py | the worker list and objects, config, deletion, tokens, metrics |
| `sweeps` | sweeps.py | syncs on demand and the periodic sweep (exchanges in syncer.py) |
| `dns` | dns/provisioning.py | each worker's DNS record, kept in step in the background |

Handlers parse, call one method of one part, and render.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from vectis.dashboard.access import Access
from vectis.dashboard.admin import Admin
from vectis.dashboard.dns import create_backend
from vectis.dashboard.dns.base import DNSBackend
from vectis.dashboard.dns.provisioning import Provisioning
from vectis.dashboard.enrollment import Enrollment
from vectis.dashboard.heartbeats import WorkerCalls
from vectis.dashboard.keyring import KeyRing
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.settings import DashboardSettings
from vectis.dashboard.sqlite_store import SQLiteStore
from vectis.dashboard.store import Store
from vectis.dashboard.sweeps import Sweeps
from vectis.dashboard.syncer import Syncer
from vectis.errors import ConfigError


def _create_store(settings: DashboardSettings) -> Store:
    """PostgreSQL when a database URL is set (only then is asyncpg imported), else SQLite."""
    if settings.database_url:
        try:
            from vectis.dashboard.postgres_store import PostgresStore
        except ModuleNotFoundError as exc:
            if exc.name != "asyncpg":
                raise
            raise ConfigError(
                "VECTIS_DATABASE_URL: the PostgreSQL store needs asyncpg: "
                "pip install 'vectis[postgresql]'"
            ) from None
        return PostgresStore(settings.database_url)
    return SQLiteStore(settings.db_path)


class Dashboard:
    """The store, the DNS backend and the syncer, and the parts built on them."""

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
        self.store = store or _create_store(settings)
        # Replicas on one PostgreSQL database share nonces, sessions, the sweep and the DNS
        # lead (replicas.py); None: this process keeps them in memory.
        self.shared = self.store.shared()
        shared = self.shared
        backend = dns or create_backend(settings.dns_backend, settings.zone, settings.dns_options)
        self.metrics = Metrics(settings.replica_name)
        self.keys = KeyRing()
        self.syncer = Syncer(
            self.store,
            self.metrics,
            timeout=settings.sync_timeout,
            concurrency=settings.sync_concurrency,
            networks=settings.worker_networks,
            stats_limit=settings.worker_stats_limit,
            clock=clock,
            require_tls=settings.require_tls,
            keys=self.keys,
            keep_idle=settings.sync_keepalive,
            keep_max=settings.sync_keepalive_max,
            threads=settings.sync_threads,
        )
        self.dns = Provisioning(
            settings, self.store, backend, clock, shared.dns_lead if shared else None
        )
        self.access = Access(settings, self.store, clock, shared.sessions if shared else None)
        self.enrollment = Enrollment(
            settings,
            self.store,
            self.access,
            self.keys,
            self.metrics,
            now=self.now,
            dns_due=self.dns.due,
        )
        self.worker_calls = WorkerCalls(
            settings,
            self.store,
            self.keys,
            self.syncer,
            self.metrics,
            clock=clock,
            dns_due=self.dns.due,
            shared=shared,
        )
        self.admin = Admin(
            self.store,
            self.dns,
            self.keys,
            self.metrics,
            now=self.now,
            forget_calls=self.worker_calls.forget,
        )
        self.sweeps = Sweeps(
            self.store,
            self.syncer,
            self.keys,
            self.admin,
            settings.sync_interval,
            shared.sweeps if shared else None,
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def start(self) -> None:
        """Open the store, check DNS, settle the admin token, load keys; then ready."""
        await self.store.open()
        await self.dns.backend.validate()
        await self.access.settle_admin_token()
        await self.dns.follow_zone()
        self.keys.load(await self.store.worker_secrets())
        await self.syncer.start()

    async def stop(self) -> None:
        await self.sweeps.close()
        await self.worker_calls.close()
        await self.syncer.close()
        await self.dns.backend.close()
        if self.shared is not None:
            await self.shared.close()
        await self.store.close()
