"""The store contract for labels and config groups, on SQLite and PostgreSQL alike.

Labels set at registration and replaced later, selectors on the list and the summary, the
merge of groups and a worker's own config into its desired config (priority, name order, the
worker's own keys over every group's), revisions that move only when the merge changes, and,
with two stores on one database writing at the same time, no group change lost.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from vectis import contract
from vectis.dashboard.model import SyncReply, after_sync
from vectis.dashboard.selectors import parse
from vectis.dashboard.store import Registration, Store, WorkerQuery
from vectis.errors import BadRequest, Conflict

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)
ZONE = "z.test"


def reg(n: int, labels: dict[str, str] | None = None) -> Registration:
    return Registration(f"10.2.{n // 250}.{n % 250 + 1}", 3000, f"{n + 1:064x}", None, None,
                        None, None, labels)  # fmt: skip


async def fleet(store: Store, labelled: dict[str, dict[str, str]]) -> None:
    """Register one worker per id, with its labels."""
    for n, (wid, labels) in enumerate(labelled.items()):
        at = NOW + timedelta(seconds=n)  # list order: registration order
        await store.register(reg(n, labels), ZONE, lambda wid=wid: wid, at)


async def config(store: Store, wid: str) -> tuple[int, dict[str, object]]:
    w = await store.get_worker(wid)
    assert w is not None
    return w.desired_revision, json.loads(w.config_json)


FIVE = {
    "edge-one-0001": {"role": "edge", "region": "eu"},
    "edge-two-0002": {"role": "edge", "region": "us"},
    "edge-three-0003": {"role": "edge", "region": "ap"},
    "core-one-0004": {"role": "core", "region": "eu"},
    "bare-one-0005": {},
}
EDGES = ["edge-one-0001", "edge-two-0002", "edge-three-0003"]


async def test_labels_are_stored_selected_and_replaced(store: Store) -> None:
    await fleet(store, FIVE)
    w = await store.get_worker("edge-two-0002")
    assert w is not None and json.loads(w.labels_json) == {"region": "us", "role": "edge"}

    async def ids(text: str, **more: object) -> list[str]:
        query = WorkerQuery(selector=parse(text), **more)  # type: ignore[arg-type]
        return [w.id for w in await store.page_workers(query)]

    assert await ids("role=edge") == EDGES
    assert await ids("role==edge,region!=us") == ["edge-one-0001", "edge-three-0003"]
    # `!=` also selects the workers without the label, as Kubernetes does.
    assert await ids("region!=eu") == ["edge-two-0002", "edge-three-0003", "bare-one-0005"]
    assert await ids("region") == list(FIVE)[:4]
    assert await ids("!region") == ["bare-one-0005"]
    assert await ids("role=nothing") == []
    assert await ids("") == list(FIVE)
    # With paging, in list order: pages of 2 and of 1 (SQLite reads a page of a selector that
    # selects few workers from the labels' index, and one that selects many in list order).
    for size in (1, 2):
        for text in ("role=edge", "region!=eu", "region", "role=edge,!nothing"):
            expected = await ids(text)
            found: list[str] = []
            after: tuple[str, str] | None = None
            while True:
                query = WorkerQuery(selector=parse(text), limit=size, after=after)
                page = await store.page_workers(query)
                found += [w.id for w in page]
                if len(page) < size:
                    break
                after = (page[-1].created_at, page[-1].id)
            assert found == expected, (size, text)
    summary = await store.summary(parse("role=edge"))
    assert (summary.total, summary.by_status) == (3, {"pending": 3})
    assert (await store.summary()).total == 5
    assert await store.count_selected(parse("region=eu")) == 2

    # Replaced through the API: the old labels no longer select it.
    w = await store.set_worker_settings("edge-two-0002", LATER, labels={"role": "core"})
    assert w is not None and json.loads(w.labels_json) == {"role": "core"}
    assert await store.get_worker(w.id) == w
    assert await ids("region=us") == []
    assert await ids("role=core") == ["edge-two-0002", "core-one-0004"]
    assert await store.set_worker_settings("none-such-0009", LATER, labels={}) is None
    # A re-registration without labels keeps them; with labels, replaces them.
    again, created = await store.register(reg(1), ZONE, lambda: "never-0010", LATER)
    assert not created and json.loads(again.labels_json) == {"role": "core"}
    again, _ = await store.register(reg(1, {"tier": "1"}), ZONE, lambda: "never-0011", LATER)
    assert json.loads(again.labels_json) == {"tier": "1"}
    assert await ids("tier=1") == ["edge-two-0002"]
    assert await ids("role=core") == ["core-one-0004"]
    # A deleted worker's labels go with it.
    await store.delete_worker("core-one-0004")
    assert await ids("role=core") == []


async def test_a_group_change_reaches_the_selected_workers_only(store: Store) -> None:
    await fleet(store, FIVE)
    group, created, moved = await store.put_group(
        "edge", "role=edge", 10, '{"cache":"1g","log":"info"}', NOW
    )
    assert created and moved == 3 and group.selector == "role=edge"
    for wid in EDGES:
        assert await config(store, wid) == (1, {"cache": "1g", "log": "info"})
    for wid in ("core-one-0004", "bare-one-0005"):
        assert await config(store, wid) == (0, {})
    # The same group again changes no worker's config, so no revision moves.
    _, created, moved = await store.put_group(
        "edge", "role=edge", 10, '{"log":"info","cache":"1g"}', LATER
    )
    assert not created and moved == 0
    assert {(await config(store, w))[0] for w in EDGES} == {1}
    # A new value: revision 2 on the three, and each is `outdated` once it had synced.
    (synced,) = await store.update_workers(
        ["edge-one-0001"], lambda w: after_sync(w, NOW, SyncReply(1, None, None, None)), NOW
    )
    assert synced.status == "synced"
    _, _, moved = await store.put_group("edge", "role=edge", 10, '{"cache":"2g"}', LATER)
    assert moved == 3
    for wid in EDGES:
        assert await config(store, wid) == (2, {"cache": "2g"})
    w = await store.get_worker("edge-one-0001")
    assert w is not None and w.status == "outdated"
    causes = [h["cause"] for h in await store.history(w.id)]
    assert causes[-1] == "config revision 2 set (group edge changed)"
    # A narrower selector leaves the others: their config loses the group's keys.
    _, _, moved = await store.put_group("edge", "role=edge,region=eu", 10, '{"cache":"2g"}', LATER)
    assert moved == 2
    assert await config(store, "edge-one-0001") == (2, {"cache": "2g"})
    assert await config(store, "edge-two-0002") == (3, {})
    # Deleted: the worker it still selected loses its keys.
    found = await store.delete_group("edge", LATER)
    assert found is not None and found[1] == 1
    assert await config(store, "edge-one-0001") == (3, {})
    assert await store.delete_group("edge", LATER) is None
    assert await store.list_groups() == []


async def test_merge_priority_name_order_and_the_workers_own_config(store: Store) -> None:
    await fleet(store, FIVE)
    await store.put_group("low", "role=edge", 1, '{"a":"low","b":"low","c":"low"}', NOW)
    await store.put_group("high", "region=eu", 5, '{"a":"high"}', NOW)
    # Equal priorities: the name that sorts first wins.
    await store.put_group("b-tie", "role=edge", 1, '{"b":"b-tie","d":"b-tie"}', NOW)
    await store.put_group("a-tie", "role=edge", 1, '{"b":"a-tie"}', NOW)
    _, merged = await config(store, "edge-one-0001")
    assert merged == {"a": "high", "b": "a-tie", "c": "low", "d": "b-tie"}
    _, merged = await config(store, "edge-two-0002")
    assert merged == {"a": "low", "b": "a-tie", "c": "low", "d": "b-tie"}
    assert await config(store, "core-one-0004") == (1, {"a": "high"})
    assert [g.name for g in await store.list_groups()] == ["a-tie", "b-tie", "high", "low"]
    # The worker's own config wins over every group; the revision moves once.
    before, _ = await config(store, "edge-one-0001")
    w = await store.set_worker_settings("edge-one-0001", LATER, own_config_json='{"a":"own"}')
    assert w is not None and w.desired_revision == before + 1
    assert json.loads(w.config_json)["a"] == "own" and w.own_config_json == '{"a":"own"}'
    # A group change under the worker's own key does not change its merge: no new revision.
    _, _, moved = await store.put_group("high", "region=eu", 5, '{"a":"higher"}', LATER)
    assert moved == 1  # core-one-0004 only
    assert (await config(store, "edge-one-0001"))[0] == before + 1
    # Setting the same own config again is no change either.
    w = await store.set_worker_settings("edge-one-0001", LATER, own_config_json='{"a":"own"}')
    assert w is not None and w.desired_revision == before + 1


async def test_a_relabelled_worker_leaves_one_group_and_joins_another(store: Store) -> None:
    await fleet(store, FIVE)
    await store.put_group("edge", "role=edge", 0, '{"role_conf":"edge","edge_only":true}', NOW)
    await store.put_group("core", "role=core", 0, '{"role_conf":"core"}', NOW)
    assert await config(store, "edge-two-0002") == (1, {"role_conf": "edge", "edge_only": True})
    w = await store.set_worker_settings("edge-two-0002", LATER, labels={"role": "core"})
    assert w is not None and w.desired_revision == 2
    assert json.loads(w.config_json) == {"role_conf": "core"}
    # The same labels again: nothing changes.
    w = await store.set_worker_settings("edge-two-0002", LATER, labels={"role": "core"})
    assert w is not None and w.desired_revision == 2
    # A worker registering with labels gets its groups' config at once, still `pending`.
    new, _ = await store.register(reg(9, {"role": "edge"}), ZONE, lambda: "new-one-0009", LATER)
    assert (new.desired_revision, new.status) == (1, "pending")
    assert json.loads(new.config_json) == {"role_conf": "edge", "edge_only": True}


async def test_limits_refuse_without_writing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    await fleet(store, FIVE)
    monkeypatch.setattr(contract, "GROUPS_MAX", 2)
    await store.put_group("one", "", 0, '{"a":1}', NOW)
    await store.put_group("two", "", 0, '{"b":1}', NOW)
    with pytest.raises(Conflict):
        await store.put_group("three", "", 0, '{"c":1}', NOW)
    await store.put_group("two", "", 0, '{"b":2}', NOW)  # replacing one is fine
    # A merge past the size cap is refused, and nothing of the change is kept.
    big = json.dumps({"big": "x" * (contract.CONFIG_LIMIT - 100)})
    await store.set_worker_settings("bare-one-0005", NOW, own_config_json=big)
    with pytest.raises(BadRequest):
        await store.put_group("one", "", 0, json.dumps({"more": "y" * 200}), LATER)
    assert json.loads((await store.get_group("one")).config_json) == {"a": 1}  # type: ignore[union-attr]
    assert await config(store, "edge-one-0001") == (3, {"a": 1, "b": 2})


# -- writers at the same time -------------------------------------------------------------------


async def test_concurrent_group_changes_lose_nothing(store: Store, second: Store) -> None:
    """Two replicas change two groups over the same workers at the same moment, round after
    round: after each round every worker holds both groups' new config, and its revision
    counts every change."""
    await fleet(store, {f"w-c-{i:04x}": {"role": "edge"} for i in range(20)})
    rounds = 12

    async def put(s: Store, name: str, i: int) -> None:
        await s.put_group(name, "role=edge", 0, json.dumps({name: i}), NOW)

    for i in range(rounds):
        await asyncio.wait_for(asyncio.gather(put(store, "a", i), put(second, "b", i)), 60)
        for w in await store.list_workers():
            assert json.loads(w.config_json) == {"a": i, "b": i}, (i, w.id)
            assert w.desired_revision == 2 * (i + 1), (i, w.id)


async def test_registrations_and_relabels_during_group_changes_miss_nothing(
    store: Store, second: Store
) -> None:
    """A worker registering or relabelled on one replica while another changes a group ends
    with that group's config, whichever commits first."""
    await fleet(store, {f"w-r-{i:04x}": {"role": "core"} for i in range(10)})

    async def relabel_and_register() -> None:
        for i in range(10):
            await second.set_worker_settings(f"w-r-{i:04x}", NOW, labels={"role": "edge"})
            await second.register(reg(100 + i, {"role": "edge"}), ZONE,
                                  lambda i=i: f"w-n-{i:04x}", NOW)  # fmt: skip

    async def groups() -> None:
        for i in range(10):
            await store.put_group("edge", "role=edge", 0, json.dumps({"n": i}), NOW)

    await asyncio.wait_for(asyncio.gather(relabel_and_register(), groups()), 120)
    workers = await store.list_workers()
    assert len(workers) == 20
    for w in workers:
        assert json.loads(w.config_json) == {"n": 9}, w.id
