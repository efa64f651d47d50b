"""`vectis dashboard workers ...` and `vectis dashboard tokens ...`: the operator's commands.

Each command parses its flags, makes one call through `vectis.adminclient`, and renders the
answer: a rich table by default, the API's own JSON document with `--json`.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vectis.cli.render import emit_json, say
from vectis.errors import BadRequest, ExitCode
from vectis.status import parse_iso

if TYPE_CHECKING:
    from vectis.adminclient import AdminClient

workers_app = typer.Typer(
    help="List, show, sync, delete and configure workers.", no_args_is_help=True
)
tokens_app = typer.Typer(help="Create, list and revoke enrollment tokens.", no_args_is_help=True)

STATUSES = ("pending", "synced", "failed", "outdated")
EXIT_FOR_STATUS = {
    "synced": ExitCode.OK,
    "pending": ExitCode.PENDING,
    "failed": ExitCode.FAILED,
    "outdated": ExitCode.OUTDATED,
}

Url = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="VECTIS_DASHBOARD_URL",
        help="The dashboard's base URL.",
        show_envvar=True,
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--admin-token-file",
        help="File holding the admin token (else VECTIS_ADMIN_TOKEN).",
        dir_okay=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON document only.")]
Timeout = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the dashboard.")
]
WorkerId = Annotated[str, typer.Argument(help="The worker's id, e.g. brave-otter-3f2a.")]

DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str, token_file: Path | None, timeout: float = 30.0) -> AdminClient:
    from vectis.adminclient import AdminClient, admin_token

    return AdminClient(url, admin_token(token_file), timeout)


def _revision(worker: dict[str, Any]) -> str:
    applied, desired = worker.get("applied_revision"), worker.get("desired_revision")
    return f"{'-' if applied is None else applied}/{'-' if desired is None else desired}"


def _address(worker: dict[str, Any]) -> str:
    ip, port = worker.get("ip"), worker.get("port")
    if ip is None:
        return "-"
    host = f"[{ip}]" if ":" in str(ip) else str(ip)
    return host if port is None else f"{host}:{port}"


# Human output: times, sizes and nested figures as people read them (`--json` keeps the API's).


def _human(value: Any) -> str:
    """A value for people: yes/no, "-", short floats, lists and objects as text; never a repr."""
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_human(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        sep = "; " if any(isinstance(v, dict | list) for v in value) else ", "
        return sep.join(_human(v) for v in value)
    return str(value)


def _size(n: Any) -> str:
    if not isinstance(n, int | float) or isinstance(n, bool):
        return _human(n)
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def _span(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def _moment(text: Any) -> datetime | None:
    try:
        return parse_iso(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def _ago(text: Any, now: datetime) -> str:
    """A time in a table: "5 min ago", "in 2 h", a date beyond a month (10 characters at most)."""
    moment = _moment(text)
    if moment is None:
        return _human(text)
    delta = (now - moment).total_seconds()
    if abs(delta) >= 30 * 86400:
        return moment.strftime("%Y-%m-%d")
    if abs(delta) < 5:
        return "now"
    return f"{_span(delta)} ago" if delta > 0 else f"in {_span(-delta)}"


def _at(text: Any, now: datetime | None = None) -> str:
    """A time in full: "2026-11-27 13:05:12 UTC", with how long ago when `now` is given."""
    moment = _moment(text)
    if moment is None:
        return _human(text)
    full = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return full if now is None else f"{full} ({_ago(text, now)})"


def _part(value: Any) -> str:
    """Used of total, e.g. "22% of 50.0 GiB", for memory, swap and each disk."""
    if not isinstance(value, dict):
        return _human(value)
    if "error" in value:
        return f"error: {value['error']}"
    percent = value.get("percent")
    share = f"{percent:.0f}%" if isinstance(percent, int | float) else _human(percent)
    return f"{share} of {_size(value.get('total'))}"


def _stats(stats: dict[str, Any]) -> list[tuple[str, str | list[str]]]:
    """Latest figures, one line each; one line per mount for disks."""
    out: list[tuple[str, str | list[str]]] = []
    for key, value in stats.items():
        if key == "cpu_percent" and isinstance(value, int | float):
            out.append(("cpu", f"{value:.4g}%"))
        elif key in ("memory", "swap"):
            out.append((key, _part(value)))
        elif key == "disks" and isinstance(value, list):
            lines = [
                f"{d.get('mount', '?')} {_part(d)}" if isinstance(d, dict) else _human(d)
                for d in value
            ]
            out.append(("disks", lines or "-"))
        elif key == "network" and isinstance(value, dict):
            sent, recv = value.get("bytes_sent"), value.get("bytes_recv")
            out.append(("network", f"sent {_size(sent)}, received {_size(recv)}"))
        elif key == "uptime" and isinstance(value, int | float):
            out.append(("uptime", _span(value)))
        elif key == "boot_time" and isinstance(value, int | float):
            out.append(
                ("booted", datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC"))
            )
        elif key == "load_average":
            out.append(("load", _human(value)))
        elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            out.append((key.replace("_", " "), [_human(v) for v in value]))
        else:
            out.append((key.replace("_", " "), _human(value)))
    return out


def _fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines on stdout, aligned; a list value continues on aligned lines."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    for key, value in pairs:
        items = value if isinstance(value, list) and value else [value]
        lines = [v if isinstance(v, str) else _human(v) for v in items]
        sys.stdout.write(f"{key + ':':<{width}} {lines[0]}\n")
        for line in lines[1:]:
            sys.stdout.write(f"{'':<{width}} {line}\n")


@dataclass(frozen=True, slots=True)
class Col:
    """A table column: `whole` ones (ids, addresses, times) are never cut nor wrapped."""

    name: str
    whole: bool = True
    # Dropped, highest first, when the terminal is too narrow for every column.
    drop: int = 0


def _fold_width(col: Col) -> int:
    return max(len(col.name), 10)


def _table(title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout that fits the terminal: optional columns go first, other text
    folds; where even that is too wide, one `name: value` block per row, so nothing is cut."""
    from rich import box
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cells = [[_human(v) for v in row] for row in rows]

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
            sys.stdout.write(f"{title}\n")
        for row in cells:
            sys.stdout.write("\n")
            _fields([(col.name, cell) for col, cell in zip(cols, row, strict=True)])
        return
    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    t.title_justify = "left"
    for i in keep:
        if cols[i].whole:
            t.add_column(cols[i].name, no_wrap=True)
        else:
            t.add_column(cols[i].name, overflow="fold", min_width=_fold_width(cols[i]))
    for row in cells:
        t.add_row(*(row[i] for i in keep))
    console.print(t)


def _worker_rows(workers: list[dict[str, Any]], now: datetime) -> list[list[Any]]:
    return [
        [
            w.get("id"),
            w.get("status"),
            _address(w),
            _revision(w),
            _ago(w.get("last_sync"), now),
            w.get("last_error"),
        ]
        for w in workers
    ]


# Subdomain, DNS state and version are in `workers show`, so that the list fits a terminal.
WORKER_COLUMNS = (
    Col("id"),
    Col("status"),
    Col("address"),
    Col("rev", drop=1),
    Col("last sync"),
    Col("last error", whole=False, drop=2),
)


def _worker_fields(worker: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    dns = worker.get("dns_status")
    if worker.get("dns_error"):
        dns = f"{dns} ({worker['dns_error']})"
    pairs: list[tuple[str, Any]] = [
        ("id", worker.get("id")),
        ("status", worker.get("status")),
        ("subdomain", worker.get("subdomain")),
        ("hostname", worker.get("hostname")),
        ("address", _address(worker)),
        ("dns", dns),
        ("version", worker.get("version")),
        ("revision", _revision(worker)),
        ("last sync", _at(worker.get("last_sync"), now)),
        ("last error", worker.get("last_error")),
        ("failures", worker.get("consecutive_failures")),
        ("registered", _at(worker.get("created_at"), now)),
    ]
    if "config" in worker:
        pairs.append(("config", json.dumps(worker["config"], separators=(",", ":"))))
    stats = worker.get("stats")
    if isinstance(stats, dict):
        pairs.extend(_stats(stats))
    _fields(pairs)


def _exit_for(worker: dict[str, Any]) -> None:
    code = EXIT_FOR_STATUS.get(str(worker.get("status")), ExitCode.ERROR)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


@workers_app.command("list")
def list_workers(
    status: Annotated[
        str | None, typer.Option("--status", help="Only workers with this status.")
    ] = None,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """List the workers, with their sync status."""
    if status is not None and status not in STATUSES:
        raise BadRequest(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    doc = _client(url, admin_token_file, timeout).list_workers(status)
    if as_json:
        emit_json(doc)
        return
    workers = [w for w in doc.get("workers") or [] if isinstance(w, dict)]
    rows = _worker_rows(workers, datetime.now(UTC))
    _table(f"{len(workers)} worker(s)", WORKER_COLUMNS, rows)


@workers_app.command("show")
def show_worker(
    worker_id: WorkerId,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Show one worker: status, address, revisions, latest stats and status history."""
    worker = _client(url, admin_token_file, timeout).get_worker(worker_id)
    if as_json:
        emit_json(worker)
        return
    _worker_fields(worker)
    history = worker.get("history") or []
    if history:
        rows = [
            [_at(h.get("at")), h.get("previous"), h.get("status"), h.get("cause")]
            for h in history
            if isinstance(h, dict)
        ]
        cols = (Col("at"), Col("from"), Col("to"), Col("cause", whole=False))
        _table("history", cols, rows)


@workers_app.command("sync")
def sync_worker(
    worker_id: WorkerId,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Sync one worker now; exits 0 when it ends synced, else its status's exit code."""
    worker = _client(url, admin_token_file, timeout).sync_worker(worker_id)
    if as_json:
        emit_json(worker)
    else:
        _worker_fields(worker)
    _exit_for(worker)


@workers_app.command("sync-all")
def sync_all(
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 600.0,
) -> None:
    """Sync every worker now; exits 0 when all synced, 11 if any failed, else 12 if outdated."""
    doc = _client(url, admin_token_file).sync_all(timeout)
    if as_json:
        emit_json(doc)
    else:
        counts: list[tuple[str, Any]] = [
            (k, v)
            for k, v in doc.items()
            if isinstance(v, int) and not isinstance(v, bool) and k != "total"
        ]
        counts.append(("total", doc.get("total")))
        _table("sync of every worker", (Col("outcome"), Col("workers")), counts)
    if doc.get("failed"):
        raise typer.Exit(int(ExitCode.FAILED))
    if doc.get("outdated"):
        raise typer.Exit(int(ExitCode.OUTDATED))


@workers_app.command("delete")
def delete_worker(
    worker_id: WorkerId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Deregister a worker; its DNS record goes too."""
    client = _client(url, admin_token_file, timeout)
    if not yes:
        if not sys.stdin.isatty():
            raise BadRequest(
                f"refusing to delete worker {worker_id} without confirmation: pass --yes"
            )
        if not typer.confirm(f"Delete worker {worker_id} and its DNS record?", err=True):
            say(f"worker {worker_id} not deleted")
            raise typer.Exit(int(ExitCode.ERROR))
    doc = client.delete_worker(worker_id)
    if as_json:
        emit_json(doc if doc is not None else {"id": worker_id, "deleted": True})
    else:
        say(f"deleted worker {worker_id}")


@workers_app.command("set-config")
def set_config(
    worker_id: WorkerId,
    stdin: Annotated[
        str | None, typer.Argument(help="`-` to read the config from stdin.", show_default=False)
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="JSON file holding the config object.", dir_okay=False),
    ] = None,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Set a worker's config (a JSON object); it is `outdated` until it applies it."""
    from vectis.adminclient import parse_config

    if stdin is not None and stdin != "-":
        raise BadRequest(f"unexpected argument {stdin!r}: use --file FILE, or - for stdin")
    if (stdin is None) == (file is None):
        raise BadRequest("give the config as --file FILE or as - (stdin), one of them")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BadRequest(f"cannot read {file}: {reason}") from None
        config = parse_config(text, str(file))
    else:
        config = parse_config(sys.stdin.read(), "stdin")
    worker = _client(url, admin_token_file, timeout).set_config(worker_id, config)
    if as_json:
        emit_json(worker)
    else:
        say(f"worker {worker_id}: config revision {worker.get('desired_revision', '?')} set")
        _worker_fields(worker)


@tokens_app.command("create")
def create_token(
    description: Annotated[
        str | None, typer.Option("--description", help="What the token is for.")
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", min=1, help="Seconds until the token expires."),
    ] = None,
    max_uses: Annotated[
        int | None, typer.Option("--max-uses", min=1, help="Registrations it allows.")
    ] = None,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Create an enrollment token; it is shown once, here."""
    client = _client(url, admin_token_file, timeout)
    doc = client.create_token(description, expires_in, max_uses)
    if as_json:
        emit_json(doc)
        return
    token = str(doc.get("token"))
    expires = doc.get("expires_at")
    _fields(
        [
            ("id", doc.get("id")),
            ("token", token),
            ("description", doc.get("description")),
            ("expires", "never" if expires is None else _at(expires, datetime.now(UTC))),
            ("max uses", doc.get("max_uses") or "unlimited"),
        ]
    )
    # The token goes through the environment, never on sudo's command line (visible in ps).
    say("The token is shown only now. Install a worker with:")
    say(
        f"  export VECTIS_TOKEN={shlex.quote(token)} VECTIS_DASHBOARD_URL={shlex.quote(client.url)}"
    )
    say(
        f"  curl -fsSL {shlex.quote(client.url + '/install.sh')} "
        "| sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash"
    )


@tokens_app.command("list")
def list_tokens(
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """List enrollment tokens (never the tokens themselves)."""
    doc = _client(url, admin_token_file, timeout).list_tokens()
    if as_json:
        emit_json(doc)
        return
    tokens = [t for t in doc.get("tokens") or [] if isinstance(t, dict)]
    now = datetime.now(UTC)
    rows = [
        [
            t.get("id"),
            t.get("description"),
            _ago(t.get("created_at"), now),
            "never" if t.get("expires_at") is None else _ago(t.get("expires_at"), now),
            f"{t.get('uses', 0)}/{t.get('max_uses') or '∞'}",
            _token_state(t),
        ]
        for t in tokens
    ]
    _table(f"{len(tokens)} token(s)", TOKEN_COLUMNS, rows)


TOKEN_COLUMNS = (
    Col("id"),
    Col("description", whole=False),
    Col("created", drop=2),
    Col("expires"),
    Col("uses", drop=1),
    Col("state"),
)


def _token_state(token: dict[str, Any]) -> str:
    if isinstance(token.get("state"), str):
        return str(token["state"])
    if token.get("revoked") or token.get("revoked_at"):
        return "revoked"
    return "active"


@tokens_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `tokens list`).")],
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Revoke an enrollment token: it registers no more workers."""
    doc = _client(url, admin_token_file, timeout).revoke_token(token_id)
    if as_json:
        emit_json(doc if doc is not None else {"id": token_id, "revoked": True})
    else:
        say(f"revoked token {token_id}")
