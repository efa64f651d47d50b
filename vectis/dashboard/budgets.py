"""Per-worker budgets: what one worker can make the dashboard do or remember.

A worker's signed calls (heartbeats, rotations) draw from a token bucket of its own, so one
worker that calls in a loop is refused (429) while every other worker is served. Buckets are
kept only for workers whose signature was verified, so nobody else can spend a worker's budget.
"""

from __future__ import annotations

import math


class CallBudget:
    """`per_minute` calls per worker, refilled continuously, with a burst of a whole minute's."""

    def __init__(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("a call budget needs at least one call a minute")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # worker id -> (tokens, as of)

    def take(self, worker_id: str, now: float) -> int:
        """Spend one call; 0 when allowed, else the whole seconds until one is."""
        tokens, at = self._buckets.get(worker_id, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + max(0.0, now - at) * self._rate)
        if tokens >= 1.0:
            self._buckets[worker_id] = (tokens - 1.0, now)
            return 0
        self._buckets[worker_id] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def give_back(self, worker_id: str) -> None:
        """Return the call `take` just spent, for a call refused after all (a replay)."""
        held = self._buckets.get(worker_id)
        if held is not None:
            self._buckets[worker_id] = (min(float(self.per_minute), held[0] + 1.0), held[1])

    def forget(self, worker_id: str) -> None:
        """Drop a deleted worker's bucket."""
        self._buckets.pop(worker_id, None)

    def nonce_share(self, capacity: int) -> int:
        """The live nonces one worker may hold in a store of `capacity`: what a worker within
        its budget needs (a nonce lives about five minutes), and never over half the store."""
        return max(1, min(6 * self.per_minute, capacity // 2))
