"""The sync status state machine (docs/protocol.md#statuses), shared by worker and dashboard.

Pure: each function takes the current record and the time, and returns the new record plus
the status change to append to the history (None when the status did not change).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from vectis.contract import STATUSES


class SyncStatus(StrEnum):
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"
    OUTDATED = "outdated"


# Spelled out above so that type checkers see the members; the list itself is contract.py's.
if tuple(s.value for s in SyncStatus) != STATUSES:
    raise RuntimeError(f"SyncStatus {[s.value for s in SyncStatus]} != contract {STATUSES}")


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second: the one time format Vectis writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Read back a time written by `iso` (or any ISO 8601 with an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """What each side keeps: status, last success, last error, consecutive failures."""

    status: SyncStatus = SyncStatus.PENDING
    last_sync: str | None = None
    last_error: str | None = None
    consecutive_failures: int = 0


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One history entry: the new status, when, and why."""

    at: str
    status: SyncStatus
    previous: SyncStatus
    cause: str

    def as_dict(self) -> dict[str, str]:
        return {
            "at": self.at,
            "status": self.status.value,
            "previous": self.previous.value,
            "cause": self.cause,
        }


Result = tuple[SyncRecord, StatusChange | None]


def _moved(old: SyncRecord, new: SyncRecord, at: str, cause: str) -> Result:
    if new.status == old.status:
        return new, None
    return new, StatusChange(at, new.status, old.status, cause)


def succeeded(
    record: SyncRecord, now: datetime, *, up_to_date: bool = True, cause: str = "sync succeeded"
) -> Result:
    """A successful exchange: `synced`, or `outdated` when the peer is behind."""
    at = iso(now)
    status = SyncStatus.SYNCED if up_to_date else SyncStatus.OUTDATED
    new = SyncRecord(status, last_sync=at, last_error=None, consecutive_failures=0)
    return _moved(record, new, at, cause)


def failed(record: SyncRecord, now: datetime, error: str) -> Result:
    """A failed attempt: `failed`, the error kept, the failure counted."""
    at = iso(now)
    new = replace(
        record,
        status=SyncStatus.FAILED,
        last_error=error,
        consecutive_failures=record.consecutive_failures + 1,
    )
    return _moved(record, new, at, error)


def outdated(record: SyncRecord, now: datetime, cause: str) -> Result:
    """Something changed that the other side has not seen yet.

    A record never reached (`pending`) or whose last attempt failed keeps that status: it is
    the more urgent fact.
    """
    if record.status in (SyncStatus.PENDING, SyncStatus.FAILED):
        return record, None
    return _moved(record, replace(record, status=SyncStatus.OUTDATED), iso(now), cause)


def reset(record: SyncRecord, now: datetime, cause: str) -> Result:
    """Back to `pending` (e.g. deregistered, or registered anew and not yet reached)."""
    return _moved(record, SyncRecord(), iso(now), cause)
