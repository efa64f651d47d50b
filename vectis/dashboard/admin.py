"""The operator's use-cases: the worker list and objects, config, deletion, enrollment tokens."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from vectis.contract import DNS_STATUSES, STATUSES
from vectis.dashboard import auth, schemas, validate
from vectis.dashboard.dns.provisioning import Provisioning
from vectis.dashboard.groups import ConfigGroup, Groups
from vectis.dashboard.keyring import KeyRing
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.model import (
    DNS_NONE,
    Token,
    Worker,
    token_json,
    worker_json,
    worker_object,
)
from vectis.dashboard.store import Store
from vectis.errors import BadRequest, NotFound
from vectis.status import SyncStatus, iso

log = logging.getLogger("vectis.dashboard")


def check_status(status: str | None) -> None:
    """The admin list's ?status= filter: absent, or one of the four statuses."""
    if status is not None and status not in STATUSES:
        raise BadRequest(f"'status' must be one of {', '.join(STATUSES)}")


class Admin:
    """Workers and tokens as the API, the CLI and the page see them."""

    def __init__(
        self,
        store: Store,
        dns: Provisioning,
        keys: KeyRing,
        metrics: Metrics,
        *,
        now: Callable[[], datetime],
        forget_calls: Callable[[str], None],
    ) -> None:
        self.store = store
        self.dns = dns
        self.keys = keys
        self.metrics = metrics
        self.now = now
        self.forget_calls = forget_calls

    def render(self, w: Worker) -> dict[str, Any]:
        """The API's worker object."""
        return worker_json(w, dns_provisions=self.dns.backend.provisions)

    async def worker(self, worker_id: str) -> Worker:
        w = await self.store.get_worker(worker_id)
        if w is None:
            raise NotFound(f"no worker {worker_id[:64]!r}")
        return w

    async def list_workers_json(self, status: str | None) -> bytes:
        """GET /infra/workers as UTF-8 JSON bytes, rendered by the store off the event loop."""
        check_status(status)
        return await self.store.list_workers_json(status, self.dns.backend.provisions)

    async def page_workers(self, params: Mapping[str, str]) -> bytes:
        """GET /infra/workers with paging or search: one page and the cursor of the next."""
        query = validate.worker_query(params)
        provisions = self.dns.backend.provisions
        if not provisions and query.dns_status is not None:
            if query.dns_status != DNS_NONE:
                return schemas.encode(schemas.WorkerPage(workers=[], next_cursor=None))
            query = replace(query, dns_status=None)  # every worker shows `none`
        workers = await self.store.page_workers(query)
        last = workers[-1] if workers else None
        more = query.limit is not None and len(workers) == query.limit and last is not None
        page = schemas.WorkerPage(
            workers=[worker_object(w, dns_provisions=provisions) for w in workers],
            next_cursor=validate.encode_cursor(last.created_at, last.id) if more and last else None,
        )
        return schemas.encode(page)

    async def summary(self, params: Mapping[str, str] | None = None) -> bytes:
        """GET /infra/workers/summary: counts by status and DNS status, every value listed;
        `?selector=` counts the workers it selects."""
        text = (params or {}).get("selector") or ""
        found = await self.store.summary(validate.selector(text) if text else None)
        by_dns = found.by_dns_status
        if not self.dns.backend.provisions:
            by_dns = {DNS_NONE: found.total}
        summary = schemas.FleetSummary(
            total=found.total,
            status={SyncStatus(s): found.by_status.get(s, 0) for s in STATUSES},
            dns_status={schemas.DnsStatus(s): by_dns.get(s, 0) for s in DNS_STATUSES},
        )
        return schemas.encode(summary)

    async def show_worker(self, worker_id: str) -> dict[str, Any]:
        """The worker, its desired config, where each key of it comes from, its history."""
        w = await self.worker(worker_id)
        doc = self.render(w)
        own = json.loads(w.own_config_json)
        _, sources = Groups(await self.store.list_groups()).merge(json.loads(w.labels_json), own)
        doc["config"] = json.loads(w.config_json)
        doc["own_config"] = own
        doc["config_sources"] = sources
        doc["history"] = await self.store.history(w.id)
        return doc

    async def set_config(self, worker_id: str, body: bytes) -> dict[str, Any]:
        """The worker's own config, over its groups'; a new revision if the merge changed."""
        config_json = validate.config(body)
        return await self._settings(worker_id, "config", own_config_json=config_json)

    async def set_labels(self, worker_id: str, body: bytes) -> dict[str, Any]:
        """Replace the worker's labels; its groups, and so its desired config, may change."""
        labels = validate.labels_body(body)
        return await self._settings(worker_id, "labels", labels=labels)

    async def _settings(
        self,
        worker_id: str,
        what: str,
        *,
        labels: dict[str, str] | None = None,
        own_config_json: str | None = None,
    ) -> dict[str, Any]:
        w = await self.store.set_worker_settings(
            worker_id, self.now(), labels=labels, own_config_json=own_config_json
        )
        if w is None:
            raise NotFound(f"no worker {worker_id[:64]!r}")
        log.info("worker %s: %s set; desired revision %d", worker_id, what, w.desired_revision)
        return self.render(w)

    # -- config groups ----------------------------------------------------------------------

    async def list_groups(self) -> bytes:
        groups = [_group(g) for g in await self.store.list_groups()]
        return schemas.encode(schemas.ConfigGroupList(groups=groups))

    async def show_group(self, name: str) -> bytes:
        g = await self.store.get_group(name)
        if g is None:
            raise NotFound(f"no config group {name[:64]!r}")
        selected = await self.store.count_selected(validate.selector(g.selector))
        return schemas.encode(schemas.ConfigGroupDetail(**_group_fields(g), selected=selected))

    async def put_group(self, name: str, body: bytes) -> tuple[bytes, bool]:
        """Create or replace a group: (the answer, created)."""
        selector, priority, config_json = validate.config_group(body)
        g, created, moved = await self.store.put_group(
            name, selector, priority, config_json, self.now()
        )
        log.info(
            "config group %s %s; %d workers given a new revision",
            name,
            "created" if created else "changed",
            moved,
        )
        answer = schemas.ConfigGroupChange(**_group_fields(g), reconfigured=moved)
        return schemas.encode(answer), created

    async def delete_group(self, name: str) -> bytes:
        found = await self.store.delete_group(name, self.now())
        if found is None:
            raise NotFound(f"no config group {name[:64]!r}")
        g, moved = found
        log.info("config group %s deleted; %d workers given a new revision", name, moved)
        answer = schemas.ConfigGroupChange(**_group_fields(g), reconfigured=moved, deleted=True)
        return schemas.encode(answer)

    async def delete_worker(self, worker_id: str) -> dict[str, Any]:
        w = await self.store.delete_worker(worker_id)
        if w is None:
            raise NotFound(f"no worker {worker_id[:64]!r}")
        self.keys.drop(w.id)
        self.forget_calls(w.id)
        log.info("deleted worker %s", w.id)
        await self.dns.remove(w.subdomain)
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


def _group_fields(g: ConfigGroup) -> dict[str, Any]:
    return {
        "name": g.name,
        "selector": g.selector,
        "priority": g.priority,
        "config": json.loads(g.config_json),
        "created_at": g.created_at,
        "updated_at": g.updated_at,
    }


def _group(g: ConfigGroup) -> schemas.ConfigGroup:
    """A group as the API answers it."""
    return schemas.ConfigGroup(**_group_fields(g))
