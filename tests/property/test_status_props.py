"""Invariants of the status state machine over random sequences of events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from vectis.status import (
    StatusChange,
    SyncRecord,
    SyncStatus,
    failed,
    iso,
    outdated,
    reset,
    succeeded,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

events = st.one_of(
    st.tuples(st.just("succeeded"), st.booleans()),
    st.tuples(st.just("failed"), st.sampled_from(["timeout", "unreachable", "identity mismatch"])),
    st.tuples(st.just("outdated"), st.sampled_from(["ip changed", "config changed"])),
    st.tuples(st.just("reset"), st.just("deregistered")),
)
steps = st.lists(st.tuples(events, st.integers(0, 10_000)), max_size=60)


def _apply(record: SyncRecord, event: tuple[str, object], now: datetime):
    kind, arg = event
    if kind == "succeeded":
        return succeeded(record, now, up_to_date=bool(arg))
    if kind == "failed":
        return failed(record, now, str(arg))
    if kind == "outdated":
        return outdated(record, now, str(arg))
    return reset(record, now, str(arg))


@settings(deadline=None, max_examples=300)
@given(start=st.sampled_from(list(SyncStatus)), sequence=steps)
def test_invariants_over_random_sequences(start: SyncStatus, sequence) -> None:
    record = SyncRecord(status=start)
    history: list[StatusChange] = []
    now = T0
    failures_since_success = 0
    for event, seconds in sequence:
        now += timedelta(seconds=seconds)
        kind = event[0]
        new, change = _apply(record, event, now)

        # A change is returned iff the status changed, and it says from what to what, when.
        assert (change is not None) == (new.status != record.status)
        if change is not None:
            assert (change.previous, change.status, change.at) == (
                record.status,
                new.status,
                iso(now),
            )
            history.append(change)

        # consecutive_failures counts failures since the last success (or reset).
        if kind in ("succeeded", "reset"):
            failures_since_success = 0
        elif kind == "failed":
            failures_since_success += 1
        assert new.consecutive_failures == failures_since_success

        # last_sync only moves on success; reset forgets it.
        if kind == "succeeded":
            assert new.last_sync == iso(now)
            assert new.last_error is None
            assert new.status == (SyncStatus.SYNCED if event[1] else SyncStatus.OUTDATED)
        elif kind == "reset":
            assert new == SyncRecord()
        else:
            assert new.last_sync == record.last_sync
        if kind == "failed":
            assert new.status is SyncStatus.FAILED and new.last_error == event[1]
        if kind == "outdated":
            assert new.last_error == record.last_error
            if record.status in (SyncStatus.PENDING, SyncStatus.FAILED):
                assert new == record  # the more urgent status stays
            else:
                assert new.status is SyncStatus.OUTDATED
        record = new

    # The history replays from the starting status to the final one, link by link.
    replayed = start
    for change in history:
        assert change.previous == replayed
        assert change.status != change.previous
        replayed = change.status
    assert replayed == record.status
    # History times never go backwards when events come in time order.
    assert [c.at for c in history] == sorted(c.at for c in history)
