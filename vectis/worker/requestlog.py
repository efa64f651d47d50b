"""The daemon's request log: every refusal or failure one line, successes counted.

Under systemd each line goes through journald, and one line per request cost about 19% of the
daemon's time under load (issue 16). So a refused or failed request is logged with its reason,
as before; a success is logged only when it is the first since the start or since a refusal
(so the log shows the recovery), and otherwise counted and summarised in one line per
`SUMMARY_INTERVAL`. `VECTIS_ACCESS_LOG=1` logs every request instead.
"""

from __future__ import annotations

import logging
from collections import Counter

#: Seconds between two summary lines of successful requests (none when there were none).
SUMMARY_INTERVAL = 60.0


class RequestLog:
    """Decides which request outcomes make a line; never given a secret to log."""

    def __init__(self, logger: logging.Logger, *, every_request: bool = False) -> None:
        self.logger = logger
        self.every_request = every_request
        self._quiet = False  # True once a success was logged and nothing failed since
        self._counts: Counter[str] = Counter()

    def succeeded(self, line: str, worker_id: str) -> None:
        """A 2xx answer without a reason: `line` is `METHOD PATH STATUS`."""
        if self.every_request:
            self.logger.info("%s worker=%s", line, worker_id)
        elif self._quiet:
            self._counts[line] += 1
        else:
            self._quiet = True
            self.logger.info(
                "%s worker=%s (further successes are counted, one summary line every %g s)",
                line,
                worker_id,
                SUMMARY_INTERVAL,
            )

    def refused(self, line: str, worker_id: str, reason: str) -> None:
        """Any other answer: always one line, with its (printable, secret-free) reason."""
        self._quiet = False
        self.logger.info("%s worker=%s reason=%s", line, worker_id, reason)

    def summarise(self) -> None:
        """Log and reset the counts of successes not logged one by one (nothing when none)."""
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        total = sum(counts.values())
        parts = ", ".join(f"{line} x{n}" for line, n in sorted(counts.items()))
        self.logger.info("%d more successful requests: %s", total, parts)
