"""The `Store` contract: what every store does, run against SQLite and PostgreSQL alike.

Registration rules, token use counting, batches and the history cap, secrets, DNS queues,
tokens and meta; and, with writers truly at the same time (two stores on one database, each
with its own connections), that no registration is doubled and no update is lost.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from vectis.dashboard.model import (
    SyncReply,
    Token,
    after_config,
    after_dns,
    after_failure,
    after_heartbeat,
    after_sync,
)
from vectis.dashboard.store import HISTORY_KEEP, Registration, Store, WorkerQuery
from vectis.errors import Conflict, Unauthorized

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
SECRET = "ab" * 32


def reg(n: int, secret: str | None = None, token: str | None = None) -> Registration:
    return Registration(f"10.1.{n // 250}.{n % 250 + 1}", 3000, secret or f"{n:064x}", None,
                        None, token)  # fmt: skip


async def test_registration_rules(store: Store) -> None:
    ids = iter(["dup-id-0001", "dup-id-0001", "dup-id-0001", "two-id-0002"])
    first = Registration("10.0.0.1", 3000, SECRET.upper(), "h", "1.0", None)
    w, created = await store.register(first, "z.test", lambda: next(ids), NOW)
    assert created and w.secret == SECRET and w.subdomain == "dup-id-0001.z.test"
    assert await store.get_worker(w.id) == w
    # A colliding ID is drawn again, never reused.
    reg2 = Registration("10.0.0.2", 3000, "cd" * 32, None, None, None)
    w2, created = await store.register(reg2, "z.test", lambda: next(ids), NOW)
    assert created and w2.id == "two-id-0002"
    # Same secret: same worker, the new address stored, its DNS queued again.
    moved = Registration("10.0.0.3", 3000, SECRET, None, None, None)
    w3, created = await store.register(moved, "z.test", lambda: "never-used-0003", NOW)
    assert not created and w3.id == w.id and w3.ip == "10.0.0.3"
    assert w3.dns_status == "pending" and w3.hostname == "h"
    assert await store.get_worker(w.id) == w3
    # An address held by another worker is a conflict, for new and known secrets.
    with pytest.raises(Conflict):
        await store.register(
            Registration("10.0.0.2", 3000, "ef" * 32, None, None, None),
            "z.test",
            lambda: "x-y-0004",
            NOW,
        )
    with pytest.raises(Conflict):
        await store.register(
            Registration("10.0.0.2", 3000, SECRET, None, None, None),
            "z.test",
            lambda: "x-y-0005",
            NOW,
        )
    assert len(await store.list_workers()) == 2
    assert await store.get_worker("x-y-0004") is None
    assert await store.worker_secrets() == {w.id: SECRET, w2.id: "cd" * 32}
    assert [h["cause"] for h in await store.history(w.id)] == ["registered"]


async def test_tls_pins_are_kept_and_only_replaced_by_a_report_with_a_pin(store: Store) -> None:
    pin, new_pin = "1f" * 32, "2e" * 32
    first = Registration("10.0.0.1", 3000, SECRET, None, None, None, pin)
    w, created = await store.register(first, "z.test", lambda: "tls-fox-0001", NOW)
    assert created and (w.tls_pin, w.tls_pin_next) == (pin, None)
    assert await store.get_worker(w.id) == w
    # A rotation under way: both keys stored, then the old one dropped.
    later = NOW + timedelta(seconds=1)
    (w,) = await store.update_workers(
        [w.id],
        lambda x: after_heartbeat(
            x, later, ip=x.ip, port=x.port, version=None, applied_revision=None,
            tls_pin=pin, tls_pin_next=new_pin,
        ),
        later,
    )  # fmt: skip
    assert (await store.get_worker(w.id)) == w and (w.tls_pin, w.tls_pin_next) == (pin, new_pin)
    (w,) = await store.update_workers(
        [w.id],
        lambda x: after_heartbeat(
            x, later, ip=x.ip, port=x.port, version=None, applied_revision=None, tls_pin=new_pin
        ),
        later,
    )
    assert (w.tls_pin, w.tls_pin_next) == (new_pin, None)
    # A registration or heartbeat without a pin never moves the worker back to plain HTTP.
    again = Registration("10.0.0.1", 3000, SECRET, None, None, None)
    w, created = await store.register(again, "z.test", lambda: "never-0002", later)
    assert not created and w.tls_pin == new_pin
    got = await store.get_worker(w.id)
    assert got is not None and (got.tls_pin, got.tls_pin_next) == (new_pin, None)


async def test_token_use_limit_is_atomic(store: Store, second: Store) -> None:
    await store.create_token(Token("t1", "hash", None, "2026-01-01T00:00:00Z", None, 3, 0, None))
    n = itertools.count()
    results = await asyncio.gather(
        *(
            (store if i % 2 else second).register(
                reg(i, token="t1"), "z.test", lambda: f"w-a-{next(n):04x}", NOW
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(1 for r in results if isinstance(r, tuple)) == 3
    assert all(isinstance(r, Unauthorized) for r in results if not isinstance(r, tuple))
    assert (await store.find_token("hash")).uses == 3  # type: ignore[union-attr]
    assert len(await store.list_workers()) == 3


async def test_token_expiry_and_revocation_refuse_registrations(store: Store) -> None:
    await store.create_token(
        Token("old", "h-old", "x", "2026-01-01T00:00:00Z", "2026-11-27T11:59:59Z", None, 0, None)
    )
    await store.create_token(Token("live", "h-live", None, "2026-01-02T00:00:00Z", None, None,
                                   0, None))  # fmt: skip
    with pytest.raises(Unauthorized):
        await store.register(reg(1, token="old"), "z.test", lambda: "w-e-0001", NOW)
    # A registration that fails for another reason counts no use.
    await store.register(reg(2), "z.test", lambda: "w-e-0002", NOW)
    with pytest.raises(Conflict):
        await store.register(reg(2, secret="ee" * 32, token="live"), "z.test", lambda: "x", NOW)
    _, created = await store.register(reg(3, token="live"), "z.test", lambda: "w-e-0003", NOW)
    assert created
    # A known secret registering again uses no token at all.
    await store.register(reg(3, token="live"), "z.test", lambda: "w-e-0004", NOW)
    revoked = await store.revoke_token("live", NOW)
    assert revoked is not None and revoked.revoked_at == "2026-11-27T12:00:00Z"
    assert revoked.uses == 1
    # Revoking again keeps the first time; an unknown token is None.
    later = await store.revoke_token("live", NOW + timedelta(hours=1))
    assert later is not None and later.revoked_at == revoked.revoked_at
    assert await store.revoke_token("nope", NOW) is None
    with pytest.raises(Unauthorized):
        await store.register(reg(5, token="live"), "z.test", lambda: "w-e-0005", NOW)
    assert [t.id for t in await store.list_tokens()] == ["old", "live"]
    assert await store.find_token("h-nope") is None
    assert await store.list_workers() != [] and len(await store.list_workers()) == 2


async def test_batched_updates_and_history_cap(store: Store) -> None:
    n = itertools.count()
    for i in range(1200):
        await store.register(reg(i), "z.test", lambda: f"w-b-{next(n):04x}", NOW)
    ids = [w.id for w in await store.list_workers()]
    assert len(ids) == 1200
    changed = await store.update_workers(ids, lambda w: after_failure(w, NOW, "timeout: x"), NOW)
    assert len(changed) == 1200 and {w.status for w in changed} == {"failed"}
    assert (await store.status_counts()) == {"failed": 1200}
    # An unknown id is skipped, a None from the mutation changes nothing.
    assert await store.update_workers(["nope-nope-0000"], lambda w: None, NOW) == []
    assert await store.update_workers(ids[:3], lambda w: None, NOW) == []
    # History keeps the latest HISTORY_KEEP entries per worker.
    wid = ids[0]
    ok = SyncReply(0, None, None, None)
    for _ in range(HISTORY_KEEP // 2 + 20):
        await store.update_workers([wid], lambda w: after_sync(w, NOW, ok), NOW)
        await store.update_workers([wid], lambda w: after_failure(w, NOW, "unreachable"), NOW)
    hist = await store.history(wid, limit=1000)
    assert len(hist) == HISTORY_KEEP and hist[-1]["status"] == "failed"
    assert hist[0]["cause"] != "registered"  # the oldest entries went first
    assert list(hist[-1]) == ["at", "status", "previous", "cause"]
    assert [h["status"] for h in await store.history(wid, limit=2)] == ["synced", "failed"]
    # Another worker's history is untouched by the cap.
    assert len(await store.history(ids[1])) == 2


async def test_an_update_onto_a_held_address_writes_nothing(store: Store) -> None:
    a, _ = await store.register(reg(1), "z.test", lambda: "w-u-0001", NOW)
    b, _ = await store.register(reg(2), "z.test", lambda: "w-u-0002", NOW)

    def onto_a(w):  # type: ignore[no-untyped-def]
        w2, changes = after_config(w, NOW, '{"k": 1}')
        return (w2.__class__(**{**_fields(w2), "ip": a.ip, "port": a.port}), changes)

    with pytest.raises(Conflict):
        await store.update_workers([b.id], onto_a, NOW)
    assert await store.get_worker(b.id) == b
    assert [h["cause"] for h in await store.history(b.id)] == ["registered"]


def _fields(w: object) -> dict[str, object]:
    return {name: getattr(w, name) for name in w.__dataclass_fields__}  # type: ignore[attr-defined]


async def test_rotation(store: Store) -> None:
    w, _ = await store.register(reg(1, secret=SECRET), "z.test", lambda: "w-r-0001", NOW)
    await store.register(reg(2, secret="cd" * 32), "z.test", lambda: "w-r-0002", NOW)
    later = NOW + timedelta(minutes=1)
    assert await store.rotate_secret(w.id, "ee" * 32, "ff" * 32, later) is None  # not its secret
    with pytest.raises(Conflict):
        await store.rotate_secret(w.id, SECRET, "CD" * 32, later)
    rotated = await store.rotate_secret(w.id, SECRET, "EF" * 32, later)
    assert rotated is not None and rotated.secret == "ef" * 32
    assert rotated.updated_at == "2026-11-27T12:01:00Z"
    assert await store.get_worker(w.id) == rotated
    assert (await store.worker_secrets())[w.id] == "ef" * 32
    assert [h["cause"] for h in await store.history(w.id)] == ["registered", "secret rotated"]
    # The old secret is free again; the new one finds the same worker.
    again, created = await store.register(reg(1, secret="ef" * 32), "z.test", lambda: "x", NOW)
    assert not created and again.id == w.id
    _, created = await store.register(reg(3, secret=SECRET), "z.test", lambda: "w-r-0003", NOW)
    assert created


async def test_delete_forgets_the_worker_and_its_history(store: Store) -> None:
    w, _ = await store.register(reg(1), "z.test", lambda: "w-d-0001", NOW)
    gone = await store.delete_worker(w.id)
    assert gone == w
    assert await store.delete_worker(w.id) is None
    assert await store.get_worker(w.id) is None and await store.history(w.id) == []
    assert await store.status_counts() == {} and await store.worker_secrets() == {}
    # Its address and secret may be registered again, as a new worker.
    w2, created = await store.register(reg(1), "z.test", lambda: "w-d-0002", NOW)
    assert created and w2.id == "w-d-0002"


async def test_list_order_and_filter(store: Store) -> None:
    # Created out of order in time and in id; ordered by (created_at, id), byte-wise.
    await store.register(reg(1), "z.test", lambda: "zeta-fox-0001", NOW)
    await store.register(reg(2), "z.test", lambda: "alpha-owl-0002", NOW - timedelta(hours=1))
    await store.register(reg(3), "z.test", lambda: "alpha-ant-0004", NOW)
    await store.register(reg(4), "z.test", lambda: "Alpha-Big-0005", NOW)
    await store.register(reg(5), "z.test", lambda: "alpha_und-0006", NOW)
    listed = [w.id for w in await store.list_workers()]
    assert listed == [
        "alpha-owl-0002",
        "Alpha-Big-0005",
        "alpha-ant-0004",
        "alpha_und-0006",
        "zeta-fox-0001",
    ]
    await store.update_workers(["alpha-ant-0004"], lambda w: after_failure(w, NOW, "x"), NOW)
    assert [w.id for w in await store.list_workers("failed")] == ["alpha-ant-0004"]
    assert len(await store.list_workers("pending")) == 4
    assert await store.list_workers("synced") == []
    assert await store.status_counts() == {"pending": 4, "failed": 1}


async def test_dns_queue_rezone_and_orphans(store: Store) -> None:
    for i in range(4):
        await store.register(reg(i), "z.test", lambda i=i: f"w-n-{i:04x}", NOW)
    t = NOW.timestamp()
    assert [w.id for w in await store.dns_due(t, 10)] != []
    assert len(await store.dns_due(t, 2)) == 2
    await store.update_workers(["w-n-0000"], lambda w: (after_dns(w, NOW, True, None, 60), []), NOW)
    await store.update_workers(
        ["w-n-0001"], lambda w: (after_dns(w, NOW, False, "refused", 60), []), NOW
    )
    due = await store.dns_due(t, 10)
    assert {w.id for w in due} == {"w-n-0002", "w-n-0003"}  # synced, and one backing off
    later = await store.dns_due(t + 3, 10)
    assert [w.id for w in later][-1] == "w-n-0001" and len(later) == 3  # by dns_next_at
    failed = await store.get_worker("w-n-0001")
    assert failed is not None and failed.dns_next_at == t + 2.0 and failed.dns_attempts == 1
    assert await store.rezone("other.test") == 4
    moved = await store.list_workers()
    assert {w.subdomain for w in moved} == {f"{w.id}.other.test" for w in moved}
    assert {(w.dns_status, w.dns_error, w.dns_attempts, w.dns_next_at) for w in moved} == {
        ("pending", None, 0, 0.0)
    }
    # Records left to delete: due in order, rescheduled, re-added, forgotten.
    await store.add_dns_orphan("b.z.test", t + 5)
    await store.add_dns_orphan("a.z.test", t - 5)
    assert await store.dns_orphans_due(t, 10) == [("a.z.test", 1)]
    await store.set_dns_orphan("a.z.test", 4, t + 10)
    assert await store.dns_orphans_due(t + 20, 10) == [("b.z.test", 1), ("a.z.test", 4)]
    assert await store.dns_orphans_due(t + 20, 1) == [("b.z.test", 1)]
    await store.add_dns_orphan("a.z.test", t)
    assert await store.dns_orphans_due(t, 10) == [("a.z.test", 1)]
    await store.set_dns_orphan("a.z.test", None, 0)
    assert await store.dns_orphans_due(t + 20, 10) == [("b.z.test", 1)]


async def test_meta(store: Store, second: Store) -> None:
    assert await store.get_meta("zone") is None
    await store.set_meta("zone", "a.test")
    await second.set_meta("zone", "b.test")
    assert await store.get_meta("zone") == "b.test"
    assert await store.healthy() is True


# -- writers at the same time -------------------------------------------------------------------


async def test_concurrent_registrations_of_one_secret_make_one_worker(
    store: Store, second: Store
) -> None:
    await store.create_token(Token("t1", "hash", None, "2026-01-01T00:00:00Z", None, None, 0,
                                   None))  # fmt: skip
    for round_ in range(5):
        secret = f"{round_ + 1:02x}" * 32
        n = itertools.count()
        results = await asyncio.gather(
            *(
                (store if i % 2 else second).register(
                    reg(round_, secret=secret, token="t1"),
                    "z.test",
                    lambda r=round_, n=n: f"w-s{r}-{next(n):04x}",
                    NOW,
                )
                for i in range(12)
            )
        )
        assert sum(created for _, created in results) == 1, results
        assert len({w.id for w, _ in results}) == 1
    workers = await store.list_workers()
    assert len(workers) == 5
    # One use per worker made, one "registered" entry per worker.
    assert (await store.find_token("hash")).uses == 5  # type: ignore[union-attr]
    for w in workers:
        assert [h["cause"] for h in await store.history(w.id)] == ["registered"]


async def test_concurrent_registrations_of_one_address_make_one_worker(
    store: Store, second: Store
) -> None:
    n = itertools.count()
    results = await asyncio.gather(
        *(
            (store if i % 2 else second).register(
                reg(7, secret=f"{i + 1:02x}" * 32), "z.test", lambda: f"w-p-{next(n):04x}", NOW
            )
            for i in range(12)
        ),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, tuple)]
    assert len(made) == 1 and made[0][1] is True
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, tuple)), results
    assert len(await store.list_workers()) == 1


async def test_concurrent_updates_of_one_worker_lose_nothing(store: Store, second: Store) -> None:
    w, _ = await store.register(reg(1), "z.test", lambda: "w-c-0001", NOW)
    rounds = 40
    await asyncio.gather(
        *(
            (store if i % 2 else second).update_workers(
                [w.id], lambda w, i=i: after_config(w, NOW, f'{{"n": {i}}}'), NOW
            )
            for i in range(rounds)
        )
    )
    final = await store.get_worker(w.id)
    assert final is not None and final.desired_revision == rounds
    assert final.config_json in {f'{{"n": {i}}}' for i in range(rounds)}
    # A pending worker stays pending under new configs: no status change to record.
    assert [h["cause"] for h in await store.history(w.id, limit=1000)] == ["registered"]


async def test_concurrent_batches_in_opposite_orders_finish(store: Store, second: Store) -> None:
    ids = []
    for i in range(30):
        w, _ = await store.register(reg(i), "z.test", lambda i=i: f"w-o-{i:04x}", NOW)
        ids.append(w.id)
    batches = [ids if k % 2 else list(reversed(ids)) for k in range(10)]
    await asyncio.wait_for(
        asyncio.gather(
            *(
                (store if k % 2 else second).update_workers(
                    batch, lambda w: after_config(w, NOW, "{}"), NOW
                )
                for k, batch in enumerate(batches)
            )
        ),
        60,
    )
    assert {w.desired_revision for w in await store.list_workers()} == {10}


async def test_pages_search_and_summary(store: Store) -> None:
    names = ["b-pg-0001", "a-pg-0002", "c-pg-0003", "d-pg-0004", "e-pg-0005"]
    for i, wid in enumerate(names):
        await store.register(reg(i), "z.test", lambda wid=wid: wid, NOW + timedelta(seconds=i % 2))
    await store.update_workers(["c-pg-0003"], lambda w: after_failure(w, NOW, "x"), NOW)
    order = [w.id for w in await store.list_workers()]
    assert order == ["b-pg-0001", "c-pg-0003", "e-pg-0005", "a-pg-0002", "d-pg-0004"]
    first = await store.page_workers(WorkerQuery(limit=2))
    assert [w.id for w in first] == order[:2]
    last = first[-1]
    rest = await store.page_workers(WorkerQuery(after=(last.created_at, last.id)))
    assert [w.id for w in rest] == order[2:]
    failed = await store.page_workers(WorkerQuery(status="failed"))
    assert [w.id for w in failed] == ["c-pg-0003"]
    assert [w.id for w in await store.page_workers(WorkerQuery(q="E-PG"))] == ["e-pg-0005"]
    assert await store.page_workers(WorkerQuery(q="%")) == []
    summary = await store.summary()
    assert (summary.total, summary.by_status, summary.by_dns_status) == (
        5,
        {"pending": 4, "failed": 1},
        {"pending": 5},
    )
