"""Output for every command: `--json` documents on stdout, people's messages on stderr.

Every text meant for people goes out through this module, and `clean` first: what Vectis prints
quotes workers (hostname, version, stats, errors), the dashboard's answers and worker.conf,
any of which may be hostile. rich is imported only when a table is actually drawn.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.text import Text

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def clean(value: object, *, newlines: bool = False) -> str:
    """`value` as text that a terminal only shows: every character that is not printable is
    written as its escape, e.g. `\\x1b`. That covers C0 controls and ESC, DEL, C1 (0x80-0x9f),
    bidi overrides and isolates, other format characters and unpaired surrogates.

    Without `newlines`, a line break is escaped too, so that a value cannot forge a line.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(c if c.isprintable() or (newlines and c == "\n") else _escape(c) for c in text)


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    n = ord(char)
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def text(value: object, style: str = "") -> Text:
    """A table cell or title for rich: cleaned, and a `Text`, so that rich reads no markup
    (`[reverse]`, `[link=...]`) nor emoji codes in it."""
    from rich.text import Text

    return Text(clean(value), style=style)


def emit_json(data: Any) -> None:
    """One JSON document on stdout, nothing else (json escapes every control character)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def out(message: str) -> None:
    """Lines for people on stdout, cleaned; line breaks are kept."""
    sys.stdout.write(clean(message, newlines=True) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A human message: always stderr, so stdout stays clean for `--json`; cleaned, line
    breaks kept."""
    sys.stderr.write(clean(message, newlines=True) + "\n")
    sys.stderr.flush()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout (only without `--json`)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=None if title is None else text(title, "table.title"))
    for i, col in enumerate(columns):
        t.add_column(text(col), no_wrap=i == 0)  # ids must never be cut
    for row in rows:
        t.add_row(*(text("-" if v is None else v) for v in row))
    Console().print(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines on stdout, aligned (only without `--json`); a non-empty list value
    continues on aligned lines. Names and values are cleaned, one line each."""
    named = [(clean(k), v) for k, v in pairs]
    width = max((len(k) for k, _ in named), default=0) + 1
    for key, value in named:
        items = value if isinstance(value, list) and value else [value]
        lines = [clean("-" if v is None else v) for v in items]
        sys.stdout.write(f"{key + ':':<{width}} {lines[0]}\n")
        for line in lines[1:]:
            sys.stdout.write(f"{'':<{width}} {line}\n")
    sys.stdout.flush()
