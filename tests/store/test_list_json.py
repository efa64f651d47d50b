"""The admin list equals the per-worker Python render, whatever was written, in every store.

The reference is `Store.list_workers_json`, which renders each worker with
`model.worker_json`. The SQLite store renders each worker in SQL and keeps the results between
lists; the PostgreSQL store renders with msgspec. These tests compare each with the reference
after every kind of write, from this store, from a second store on the same database, from
the database's own client, and with writes and lists running at once.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.store.conftest import Backend
from vectis import __version__
from vectis.dashboard import schemas
from vectis.dashboard.model import (
    SyncReply,
    Worker,
    after_config,
    after_dns,
    after_failure,
    after_heartbeat,
    after_sync,
)
from vectis.dashboard.store import Registration, Store

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
STATUSES = (None, "pending", "synced", "failed", "outdated")


async def reference(store: Store, status: str | None, dns: bool) -> Any:
    return json.loads(await Store.list_workers_json(store, status, dns))


async def assert_same(store: Store) -> list[str]:
    """Every filter and both DNS modes: the fast list equals the reference; the ids listed."""
    for dns in (True, False):
        for status in STATUSES:
            raw = await store.list_workers_json(status, dns)
            fast = json.loads(raw, parse_constant=_refuse)
            assert fast == await reference(store, status, dns), (status, dns)
            # Field order too: clients and the OpenAPI schema see the same objects.
            for doc in fast["workers"]:
                assert list(doc) == list(_FIELDS)
    return [w["id"] for w in json.loads(await store.list_workers_json(None, True))["workers"]]


def _refuse(name: str) -> Any:
    raise AssertionError(f"the list holds {name}, which is not JSON")


# The API's worker object, in the order the OpenAPI schema gives.
_FIELDS = schemas.Worker.__struct_fields__


async def register(
    store: Store, n: int, wid: str, hostname: str | None = None, at: datetime = NOW
) -> Worker:
    labels = {"n": str(n), "example.com/odd": ""} if n % 2 else None
    reg = Registration(f"10.9.{n // 250}.{n % 250 + 1}", 3000 + n % 7, f"{n:064x}", hostname,
                       None if n % 3 else f'1.{n} "beta"', None, None, labels)  # fmt: skip
    w, created = await store.register(reg, "z.test", lambda: wid, at)
    assert created
    return w


async def mutate(store: Store, wid: str, fn: Any) -> None:
    changed = await store.update_workers([wid], lambda w: fn(w), NOW)
    assert changed, wid


def reply(n: int, stats: Any, metadata: Any) -> SyncReply:
    """Stats and metadata stored as the syncer stores them (`untrusted.readable_tree`)."""
    return SyncReply(
        applied_revision=n,
        version=f"2.{n}",
        stats_json=None if stats is None else _compact(stats),
        metadata_json=None if metadata is None else _compact(metadata),
    )


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def varied_fleet(store: Store) -> None:
    """Workers in every status and DNS state, with and without stats, odd text everywhere."""
    # Registered out of order in time and in id, so the (created_at, id) order is tested.
    await register(store, 1, "zeta-fox-0001", "h\u00f6st-\u65e5\u672c-\U0001f680")
    await register(store, 2, "alpha-owl-0002", None, NOW - timedelta(hours=1))
    # Controls the wire refuses, but a store renders all the same (never NUL: see store.py).
    await register(store, 3, "beta-elk-0003", 'quote" back\\ tab\t nl\n soh\x01 us\x1f del\x7f')
    await register(store, 4, "alpha-ant-0004", "same-time")
    await register(store, 5, "omega-bee-0005", "</script><b>", NOW + timedelta(seconds=1))
    later = NOW + timedelta(minutes=5)
    await mutate(
        store,
        "zeta-fox-0001",
        lambda w: after_sync(
            w,
            later,
            reply(
                0,
                {"cpu_percent": 1.5, "load": [0.1, 2e-7, 1e300], "big": 2**70, "ok": True},
                {"os": "Linux \u00e9\u00e8", "tags": ["a", None, {"deep": {"er": []}}]},
            ),
        ),
    )
    failure = 'timeout: \u00fc \\ "'
    await mutate(store, "alpha-owl-0002", lambda w: after_failure(w, later, failure))
    await mutate(store, "beta-elk-0003", lambda w: after_config(w, later, '{"x": "\u2603"}'))
    await mutate(store, "beta-elk-0003", lambda w: after_sync(w, later, reply(0, {}, None)))
    await mutate(
        store, "alpha-ant-0004", lambda w: (after_dns(w, later, False, "refused \u00df", 60), [])
    )
    await mutate(store, "omega-bee-0005", lambda w: (after_dns(w, later, True, None, 60), []))
    # The dashboard's own version: the one worker whose version is current.
    await mutate(
        store,
        "omega-bee-0005",
        lambda w: after_heartbeat(
            w, later, ip=w.ip, port=w.port, version=__version__, applied_revision=None
        ),
    )


async def test_every_field_kind_renders_as_the_python_render(store: Store) -> None:
    await varied_fleet(store)
    ids = await assert_same(store)
    assert ids == [
        "alpha-owl-0002",
        "alpha-ant-0004",
        "beta-elk-0003",
        "zeta-fox-0001",
        "omega-bee-0005",
    ]
    listed = json.loads(await store.list_workers_json(None, True))["workers"]
    statuses = {w["status"] for w in listed}
    assert statuses == {"pending", "synced", "failed", "outdated"}
    assert {w["dns_status"] for w in listed} == {"pending", "synced", "failed"}
    assert {w["dns_status"] for w in json.loads(await store.list_workers_json(None, False))[
        "workers"]} == {"none"}  # fmt: skip
    fox = next(w for w in listed if w["id"] == "zeta-fox-0001")
    assert fox["stats"]["big"] == 2**70 and fox["metadata"]["tags"][2] == {"deep": {"er": []}}
    assert all("secret" not in w for w in listed)
    # Behind, current, or never reported (null).
    current = {w["id"]: w["version_current"] for w in listed}
    assert current == {
        "alpha-owl-0002": None,
        "alpha-ant-0004": None,
        "beta-elk-0003": False,
        "zeta-fox-0001": False,
        "omega-bee-0005": True,
    }


async def test_stored_json_that_is_not_json_lists_as_null(store: Store, backend: Backend) -> None:
    await varied_fleet(store)
    # As a database written by hand or by an older version could hold (before any list).
    backend.execute(
        "UPDATE workers SET stats_json = '{\"cpu\": ', metadata_json = 'not json' "
        "WHERE id = 'zeta-fox-0001'"
    )
    backend.execute("UPDATE workers SET stats_json = '[1, 2]' WHERE id = 'beta-elk-0003'")
    await assert_same(store)
    listed = {w["id"]: w for w in json.loads(await store.list_workers_json(None, True))["workers"]}
    assert listed["zeta-fox-0001"]["stats"] is None
    assert listed["zeta-fox-0001"]["metadata"] is None
    assert listed["beta-elk-0003"]["stats"] == [1, 2]


async def test_a_nan_in_stats_lists_as_null_not_as_invalid_json(store: Store) -> None:
    await register(store, 1, "nan-cat-0001")
    await mutate(
        store, "nan-cat-0001", lambda w: after_sync(w, NOW, reply(0, {"x": float("nan")}, {}))
    )
    (doc,) = json.loads(await store.list_workers_json(None, True), parse_constant=_refuse)[
        "workers"
    ]
    assert doc["stats"] is None and doc["metadata"] == {}


async def test_every_kind_of_write_is_seen_by_the_next_list(store: Store, backend: Backend) -> None:
    await varied_fleet(store)
    await assert_same(store)
    # A heartbeat that moves a worker; a sync; a config; a rotation; a delete; a new worker.
    await mutate(
        store,
        "alpha-owl-0002",
        lambda w: after_heartbeat(
            w, NOW, ip="10.8.0.1", port=3001, version="9", applied_revision=0
        ),
    )
    await assert_same(store)
    await mutate(store, "alpha-ant-0004", lambda w: after_sync(w, NOW, reply(0, {"a": 1}, None)))
    await assert_same(store)
    await mutate(store, "alpha-ant-0004", lambda w: after_config(w, NOW, "{}"))
    await assert_same(store)
    old = f"{4:064x}"
    assert await store.rotate_secret("alpha-ant-0004", old, "ab" * 32, NOW) is not None
    await assert_same(store)
    # New labels, a group that selects by them, and a worker's own config.
    await store.set_worker_settings("alpha-ant-0004", NOW, labels={"role": "edge"})
    await assert_same(store)
    await store.put_group("edge", "role=edge", 0, '{"g": 1}', NOW)
    await assert_same(store)
    await store.set_worker_settings("alpha-ant-0004", NOW, own_config_json='{"o": 2}')
    await assert_same(store)
    listed = json.loads(await store.list_workers_json(None, True))["workers"]
    ant = next(w for w in listed if w["id"] == "alpha-ant-0004")
    assert ant["labels"] == {"role": "edge"} and ant["desired_revision"] == 3
    assert await store.delete_worker("beta-elk-0003") is not None
    assert "beta-elk-0003" not in await assert_same(store)
    await register(store, 9, "aaa-new-0009", "new")
    assert (await assert_same(store))[:2] == ["alpha-owl-0002", "aaa-new-0009"]
    # A re-registration (same secret) that moves the worker and names its host.
    reg = Registration("10.7.0.1", 3000, f"{1:064x}", "renamed", "3.0", None)
    w, created = await store.register(reg, "z.test", lambda: "unused-id-0000", NOW)
    assert not created and w.id == "zeta-fox-0001"
    await assert_same(store)
    # A new zone rewrites every subdomain in one statement.
    assert await store.rezone("other.test") == 5
    await assert_same(store)
    # A transaction that fails writes nothing, and the list still matches.
    with pytest.raises(Exception, match="held by another worker"):
        await store.update_workers(
            ["aaa-new-0009"],
            lambda w: after_heartbeat(
                w, NOW, ip="10.8.0.1", port=3001, version=None, applied_revision=None
            ),
            NOW,
        )
    await assert_same(store)

    # Another store on the same data (another process, e.g. `dns check --fix`) writes.
    other = backend.make()
    await other.open()
    try:
        await other.update_workers(
            ["alpha-owl-0002", "omega-bee-0005"],
            lambda w: (after_dns(w, NOW, False, "from elsewhere", 60), []),
            NOW,
        )
        await other.delete_worker("aaa-new-0009")
    finally:
        await other.close()
    ids = await assert_same(store)
    assert "aaa-new-0009" not in ids
    listed = {w["id"]: w for w in json.loads(await store.list_workers_json(None, True))["workers"]}
    assert listed["omega-bee-0005"]["dns_error"] == "from elsewhere"


async def test_lists_during_concurrent_writes_stay_whole_and_end_current(
    store: Store,
) -> None:
    n = 300
    for i in range(n):
        await register(store, i, f"w-c-{i:04x}", f"host-{i}")
    ids = [f"w-c-{i:04x}" for i in range(n)]
    rng = random.Random(11)
    assert await store.list_workers_json(None, True)  # a first full render to keep

    async def writes() -> None:
        for k in range(200):
            picked = rng.sample(ids, rng.choice([1, 1, 1, 40]))
            at = NOW + timedelta(seconds=k)
            if k % 3:
                rep = reply(k, {"k": k}, {"i": k})
                await store.update_workers(picked, lambda w, at=at, r=rep: after_sync(w, at, r), at)
            else:
                await store.update_workers(
                    picked, lambda w, at=at, k=k: after_failure(w, at, f"cause {k} \u00e9"), at
                )

    async def lists() -> list[Any]:
        seen = []
        for _ in range(60):
            seen.append(json.loads(await store.list_workers_json(rng.choice(STATUSES), True)))
        return seen

    _, *listed = await asyncio.gather(writes(), lists(), lists())
    for docs in listed:
        for doc in docs:
            got = [w["id"] for w in doc["workers"]]
            assert len(got) == len(set(got)) and set(got) <= set(ids)
    # Once the writes are done, nothing written meanwhile is missing from the list.
    await assert_same(store)


async def test_both_stores_render_the_same_bytes(tmp_path: Any, pg_server: Any) -> None:
    """The same writes give byte-identical lists from SQLite and PostgreSQL."""
    from vectis.dashboard.postgres_store import PostgresStore
    from vectis.dashboard.sqlite_store import SQLiteStore

    stores: list[Store] = [
        SQLiteStore(tmp_path / "data" / "dashboard.db"),
        PostgresStore(pg_server.create_database()),
    ]
    rendered = []
    for s in stores:
        await s.open()
        try:
            await varied_fleet(s)
            rendered.append(
                [
                    await s.list_workers_json(status, dns)
                    for dns in (True, False)
                    for status in STATUSES
                ]
            )
        finally:
            await s.close()
    assert rendered[0] == rendered[1]
