"""Output for every command: `--json` documents on stdout, people's messages on stderr.

rich is imported only when a table is actually drawn.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def emit_json(data: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A human message: always stderr, so stdout stays clean for `--json`."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout (only without `--json`)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, no_wrap=i == 0)  # ids must never be cut
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
    Console().print(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines on stdout, aligned (only without `--json`)."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        sys.stdout.write(f"{key + ':':<{width + 1}} {'-' if value is None else value}\n")
