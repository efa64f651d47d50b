"""The status state machine: transitions, counters and history entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vectis.status import SyncRecord, SyncStatus, failed, iso, outdated, parse_iso, reset, succeeded

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_success_from_pending() -> None:
    rec, change = succeeded(SyncRecord(), T0, cause="registered")
    assert rec == SyncRecord(SyncStatus.SYNCED, "2026-11-27T12:00:00Z", None, 0)
    assert change is not None and change.previous is SyncStatus.PENDING
    assert change.cause == "registered"


def test_failures_count_and_keep_last_success() -> None:
    rec, _ = succeeded(SyncRecord(), T0)
    rec, change = failed(rec, T0 + timedelta(minutes=1), "unreachable: connection refused")
    assert change is not None and change.status is SyncStatus.FAILED
    rec, change = failed(rec, T0 + timedelta(minutes=2), "timeout")
    assert change is None  # still failed: no new history entry
    assert rec.consecutive_failures == 2
    assert rec.last_error == "timeout"
    assert rec.last_sync == "2026-11-27T12:00:00Z"
    rec, change = succeeded(rec, T0 + timedelta(minutes=3))
    assert rec.consecutive_failures == 0 and rec.last_error is None
    assert change is not None and change.previous is SyncStatus.FAILED


def test_success_behind_is_outdated() -> None:
    rec, _ = succeeded(SyncRecord(), T0, up_to_date=False)
    assert rec.status is SyncStatus.OUTDATED


def test_outdated_only_from_synced() -> None:
    assert outdated(SyncRecord(), T0, "ip changed") == (SyncRecord(), None)
    bad, _ = failed(SyncRecord(), T0, "x")
    assert outdated(bad, T0, "ip changed")[0].status is SyncStatus.FAILED
    ok, _ = succeeded(SyncRecord(), T0)
    rec, change = outdated(ok, T0, "ip changed")
    assert rec.status is SyncStatus.OUTDATED and change is not None


def test_reset_and_iso_round_trip() -> None:
    ok, _ = succeeded(SyncRecord(), T0)
    rec, change = reset(ok, T0, "deregistered")
    assert rec == SyncRecord() and change is not None
    assert parse_iso(iso(T0)) == T0
