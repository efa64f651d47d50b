"""The pure Route53 change plan and the packing of batches within Route53's limits."""

from __future__ import annotations

import pytest

from vectis.dashboard.dns.batching import (
    MARKER_VALUE,
    NotOwned,
    RecordSet,
    Unit,
    pack,
    plan_delete,
    plan_ensure,
    to_change_batch,
)

N = "w.fleet.test"
MARK = RecordSet(N, "TXT", 60, (MARKER_VALUE,))


def actions(unit: Unit) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.action, c.rrset.type, c.rrset.values) for c in unit.changes]


def test_a_new_name_is_created_with_its_marker() -> None:
    assert actions(plan_ensure(N, "192.0.2.1", [], 60)) == [
        ("CREATE", "TXT", (MARKER_VALUE,)),
        ("CREATE", "A", ("192.0.2.1",)),
    ]


def test_an_owned_name_is_upserted_and_the_other_family_deleted() -> None:
    current = [MARK, RecordSet(N, "A", 60, ("192.0.2.1",))]
    assert plan_ensure(N, "192.0.2.1", current, 60).changes == ()
    assert actions(plan_ensure(N, "192.0.2.2", current, 60)) == [("UPSERT", "A", ("192.0.2.2",))]
    assert actions(plan_ensure(N, "2001:db8::1", current, 60)) == [
        ("UPSERT", "AAAA", ("2001:db8::1",)),
        ("DELETE", "A", ("192.0.2.1",)),
    ]
    # A new TTL is a change too.
    assert actions(plan_ensure(N, "192.0.2.1", current, 300)) == [("UPSERT", "A", ("192.0.2.1",))]


def test_a_name_without_the_marker_is_never_touched() -> None:
    foreign = [RecordSet(N, "A", 300, ("203.0.113.1",))]
    with pytest.raises(NotOwned, match="does not own it"):
        plan_ensure(N, "192.0.2.1", foreign, 60)
    with pytest.raises(NotOwned):
        plan_delete(N, foreign)
    alias = RecordSet(N, "A", None, (), {"Name": N + ".", "Type": "A", "AliasTarget": {}})
    with pytest.raises(NotOwned, match="alias"):
        plan_ensure(N, "192.0.2.1", [MARK, alias], 60)


def test_delete_is_exact_and_keeps_other_txt_values() -> None:
    a = RecordSet(N, "A", 60, ("192.0.2.1",))
    assert plan_delete(N, []).changes == ()
    assert actions(plan_delete(N, [MARK, a])) == [
        ("DELETE", "A", ("192.0.2.1",)),
        ("DELETE", "TXT", (MARKER_VALUE,)),
    ]
    shared = RecordSet(N, "TXT", 60, (MARKER_VALUE, '"v=spf1 -all"'))
    assert actions(plan_delete(N, [shared, a]))[-1] == ("UPSERT", "TXT", ('"v=spf1 -all"',))


def test_pack_respects_both_limits_and_never_splits_a_name() -> None:
    units = [
        plan_ensure(f"w{i}.fleet.test", f"10.0.{i // 256}.{i % 256}", [], 60) for i in range(1200)
    ]
    batches = pack(units)
    assert [len(b) for b in batches] == [500, 500, 200]  # 2 elements per new name
    for batch in batches:
        changes = to_change_batch(batch)["Changes"]
        assert len(changes) <= 1000
        assert (
            sum(len(r["Value"]) for c in changes for r in c["ResourceRecordSet"]["ResourceRecords"])
            <= 32000
        )
    # UPSERTs count twice, in elements and in characters.
    upserts = [
        Unit(u.name, (u.changes[1].__class__("UPSERT", u.changes[1].rrset),)) for u in units[:10]
    ]
    assert [len(b) for b in pack(upserts, max_elements=4)] == [2, 2, 2, 2, 2]
    assert [len(b) for b in pack(units[:10], max_chars=3 * units[0].chars)] == [3, 3, 3, 1]
    assert pack([Unit(N, ())]) == []
