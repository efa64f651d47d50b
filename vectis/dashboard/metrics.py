"""Prometheus text exposition of the dashboard's counters, kept in memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from vectis import __version__
from vectis.contract import STATUSES

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    """A label value in the exposition format's escapes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and one histogram; rendered with the live worker counts on each scrape."""

    def __init__(self, replica: str = "") -> None:
        #: which dashboard process counted: replicas on one database each count their own
        self.replica = replica
        self.syncs: Counter[str] = Counter()
        self.registrations: Counter[str] = Counter()
        self.heartbeats: Counter[str] = Counter()
        #: workers this replica claimed for the periodic sweep shared by replicas
        self.sweep_claimed = 0
        self._buckets = [0] * len(DURATION_BUCKETS)
        self._count = 0
        self._sum = 0.0

    def sync_done(self, outcome: str, seconds: float) -> None:
        self.syncs[outcome] += 1
        self._count += 1
        self._sum += seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self._buckets[i] += 1
                break

    def render(self, workers_by_status: Mapping[str, int]) -> str:
        out = [
            "# HELP vectis_dashboard_info The dashboard replica these counters are from.",
            "# TYPE vectis_dashboard_info gauge",
            f'vectis_dashboard_info{{replica="{_label(self.replica)}",'
            f'version="{_label(__version__)}"}} 1',
            "# HELP vectis_workers Registered workers by sync status.",
            "# TYPE vectis_workers gauge",
        ]
        for status in sorted(set(STATUSES) | set(workers_by_status)):
            out.append(f'vectis_workers{{status="{status}"}} {workers_by_status.get(status, 0)}')
        out += [
            "# HELP vectis_syncs_total Sync attempts by outcome.",
            "# TYPE vectis_syncs_total counter",
        ]
        for outcome in sorted(set(self.syncs) | {"synced", "failed", "outdated"}):
            out.append(f'vectis_syncs_total{{outcome="{outcome}"}} {self.syncs[outcome]}')
        out += [
            "# HELP vectis_sync_duration_seconds Time of one sync exchange with a worker.",
            "# TYPE vectis_sync_duration_seconds histogram",
        ]
        running = 0
        for bound, count in zip(DURATION_BUCKETS, self._buckets, strict=True):
            running += count
            out.append(f'vectis_sync_duration_seconds_bucket{{le="{bound:g}"}} {running}')
        out.append(f'vectis_sync_duration_seconds_bucket{{le="+Inf"}} {self._count}')
        out.append(f"vectis_sync_duration_seconds_sum {self._sum:.6f}")
        out.append(f"vectis_sync_duration_seconds_count {self._count}")
        out += [
            "# HELP vectis_registrations_total Auto-registration attempts by result.",
            "# TYPE vectis_registrations_total counter",
        ]
        for result in sorted(set(self.registrations) | {"created", "updated"}):
            out.append(
                f'vectis_registrations_total{{result="{result}"}} {self.registrations[result]}'
            )
        out += [
            "# HELP vectis_heartbeats_total Worker heartbeats by result.",
            "# TYPE vectis_heartbeats_total counter",
        ]
        for result in sorted(set(self.heartbeats) | {"ok"}):
            out.append(f'vectis_heartbeats_total{{result="{result}"}} {self.heartbeats[result]}')
        out += [
            "# HELP vectis_sweep_claimed_total Workers this replica claimed for the periodic "
            "sweep (replicas on one database split it; 0 for a dashboard on its own).",
            "# TYPE vectis_sweep_claimed_total counter",
            f"vectis_sweep_claimed_total {self.sweep_claimed}",
        ]
        return "\n".join(out) + "\n"
