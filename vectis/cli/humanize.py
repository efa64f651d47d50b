"""Human output of the operator commands: times, sizes and nested figures as people read them.

`--json` keeps the API's exact values; this is only for tables and `name: value` lines, which
go out through `vectis.cli.render` (cleaned there). rich is imported only when a table is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vectis.cli import render
from vectis.status import parse_iso

# Human output: times, sizes and nested figures as people read them (`--json` keeps the API's).


def human(value: Any) -> str:
    """A value for people: yes/no, "-", short floats, lists and objects as text; never a repr."""
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {human(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        sep = "; " if any(isinstance(v, dict | list) for v in value) else ", "
        return sep.join(human(v) for v in value)
    return str(value)


def size(n: Any) -> str:
    if not isinstance(n, int | float) or isinstance(n, bool):
        return human(n)
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def span(seconds: float) -> str:
    s = int(seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= length:
            return f"{s // length} {unit}"
    return f"{s} s"


def when(text: Any) -> datetime | None:
    try:
        return parse_iso(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def ago(text: Any, now: datetime) -> str:
    """A time in a table: "5 min ago", "in 2 h", a date beyond a month (10 characters at most)."""
    moment = when(text)
    if moment is None:
        return human(text)
    delta = (now - moment).total_seconds()
    if abs(delta) >= 30 * 86400:
        return moment.strftime("%Y-%m-%d")
    if abs(delta) < 5:
        return "now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(-delta)}"


def at(text: Any, now: datetime | None = None) -> str:
    """A time in full: "2026-11-27 13:05:12 UTC", with how long ago when `now` is given."""
    moment = when(text)
    if moment is None:
        return human(text)
    full = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return full if now is None else f"{full} ({ago(text, now)})"


def part(value: Any) -> str:
    """Used of total, e.g. "22% of 50.0 GiB", for memory, swap and each disk."""
    if not isinstance(value, dict):
        return human(value)
    if "error" in value:
        return f"error: {value['error']}"
    percent = value.get("percent")
    share = f"{percent:.0f}%" if isinstance(percent, int | float) else human(percent)
    return f"{share} of {size(value.get('total'))}"


def stats(stats: dict[str, Any]) -> list[tuple[str, str | list[str]]]:
    """Latest figures, one line each; one line per mount for disks."""
    out: list[tuple[str, str | list[str]]] = []
    for key, value in stats.items():
        if key == "cpu_percent" and isinstance(value, int | float):
            out.append(("cpu", f"{value:.4g}%"))
        elif key in ("memory", "swap"):
            out.append((key, part(value)))
        elif key == "disks" and isinstance(value, list):
            lines = [
                f"{d.get('mount', '?')} {part(d)}" if isinstance(d, dict) else human(d)
                for d in value
            ]
            out.append(("disks", lines or "-"))
        elif key == "network" and isinstance(value, dict):
            sent, recv = value.get("bytes_sent"), value.get("bytes_recv")
            out.append(("network", f"sent {size(sent)}, received {size(recv)}"))
        elif key == "uptime" and isinstance(value, int | float):
            out.append(("uptime", span(value)))
        elif key == "boot_time" and isinstance(value, int | float):
            out.append(
                ("booted", datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC"))
            )
        elif key == "load_average":
            out.append(("load", human(value)))
        elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            out.append((key.replace("_", " "), [human(v) for v in value]))
        else:
            out.append((key.replace("_", " "), human(value)))
    return out


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines on stdout, aligned; a list value continues on aligned lines."""

    def shown(v: Any) -> str:
        return v if isinstance(v, str) else human(v)

    render.fields(
        [
            (key, [shown(v) for v in value] if isinstance(value, list) and value else shown(value))
            for key, value in pairs
        ]
    )


@dataclass(frozen=True, slots=True)
class Col:
    """A table column: `whole` ones (ids, addresses, times) are never cut nor wrapped."""

    name: str
    whole: bool = True
    # Dropped, highest first, when the terminal is too narrow for every column.
    drop: int = 0


def _fold_width(col: Col) -> int:
    return max(len(col.name), 10)


def table(title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout that fits the terminal: optional columns go first, other text
    folds; where even that is too wide, one `name: value` block per row, so nothing is cut."""
    from rich import box
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cells = [[render.clean(human(v)) for v in row] for row in rows]

    def width(keep: list[int]) -> int:
        # rich's own measure is clamped to the console, so the width is summed here.
        return 3 * (len(keep) - 1) + sum(
            max(cell_len(c) for c in [cols[i].name, *(row[i] for row in cells)])
            if cols[i].whole
            else _fold_width(cols[i])
            for i in keep
        )

    keep = list(range(len(cols)))
    by_drop = sorted((i for i in keep if cols[i].drop), key=lambda i: -cols[i].drop)
    while width(keep) > console.width and by_drop:
        keep.remove(by_drop.pop(0))
    if width(keep) > console.width:
        if title:
            render.out(title)
        for row in cells:
            render.out("")
            render.fields([(col.name, cell) for col, cell in zip(cols, row, strict=True)])
        return
    shown_title = None if title is None else render.text(title, "table.title")
    t = Table(title=shown_title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    t.title_justify = "left"
    for i in keep:
        if cols[i].whole:
            t.add_column(render.text(cols[i].name), no_wrap=True)
        else:
            t.add_column(render.text(cols[i].name), overflow="fold", min_width=_fold_width(cols[i]))
    for row in cells:
        t.add_row(*(render.text(row[i]) for i in keep))
    console.print(t)
