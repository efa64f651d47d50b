"""`vectis dashboard workers ...`: the operator's commands on workers, and the options and
client every admin command shares (`tokens.py` has the enrollment tokens' commands).

Each command parses its flags, makes one call through `vectis.adminclient`, and renders the
answer: a rich table by default, the API's own JSON document with `--json`.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vectis.cli import humanize as hz
from vectis.cli.render import clean, emit_json, say
from vectis.contract import STATUSES
from vectis.errors import BadRequest, ExitCode, Unreachable, VectisError

if TYPE_CHECKING:
    from vectis.adminclient import AdminClient

workers_app = typer.Typer(
    help="List, show, sync, delete, label and configure workers.", no_args_is_help=True
)

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
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
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


def labels_text(labels: Any) -> str:
    """A worker's labels as `k=v,k2=v2` (sorted by key); empty when it has none."""
    if not isinstance(labels, dict):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _worker_rows(workers: list[dict[str, Any]], now: datetime) -> list[list[Any]]:
    return [
        [
            w.get("id"),
            w.get("status"),
            _address(w),
            _revision(w),
            hz.ago(w.get("last_sync"), now),
            labels_text(w.get("labels")),
            w.get("last_error"),
        ]
        for w in workers
    ]


# Subdomain, DNS state and version are in `workers show`, so that the list fits a terminal.
WORKER_COLUMNS = (
    hz.Col("id"),
    hz.Col("status"),
    hz.Col("address"),
    hz.Col("rev", drop=1),
    hz.Col("last sync"),
    hz.Col("labels", whole=False, drop=3),
    hz.Col("last error", whole=False, drop=2),
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
        ("version", _version(worker)),
        ("labels", labels_text(worker.get("labels")) or "-"),
        ("revision", _revision(worker)),
        ("last sync", hz.at(worker.get("last_sync"), now)),
        ("last error", worker.get("last_error")),
        ("failures", worker.get("consecutive_failures")),
        ("registered", hz.at(worker.get("created_at"), now)),
    ]
    if "config" in worker:
        pairs.append(("config", json.dumps(worker["config"], separators=(",", ":"))))
    sources = worker.get("config_sources")
    if isinstance(sources, dict) and sources:
        pairs.append(("config from", [f"{k}: {v}" for k, v in sources.items()]))
    stats = worker.get("stats")
    if isinstance(stats, dict):
        pairs.extend(hz.stats(stats))
    hz.fields(pairs)


def _version(worker: dict[str, Any]) -> Any:
    """The worker's version, marked when it is not the dashboard's build (install.sh from the
    dashboard upgrades it)."""
    version = worker.get("version")
    if version and worker.get("version_current") is False:
        return f"{version} (not the dashboard's version: reinstall with its install.sh)"
    return version


def _exit_for(worker: dict[str, Any]) -> None:
    code = EXIT_FOR_STATUS.get(str(worker.get("status")), ExitCode.ERROR)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


PAGE = 1000  # workers per request: the dashboard's largest page
SUMMARY_FIRST = 100  # a people's list longer than this starts with the fleet's counts


@workers_app.command("list")
def list_workers(
    status: Annotated[
        str | None, typer.Option("--status", help="Only workers with this status.")
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            "-q",
            help="Only workers whose id, subdomain, hostname or IP holds this text (any case).",
        ),
    ] = None,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            "-l",
            help="Only workers whose labels match, e.g. role=edge,region!=us "
            "(=, ==, !=, key, !key; commas join).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many workers.")
    ] = None,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """List the workers, with their sync status, a page of the dashboard's list at a time."""
    if status is not None and status not in STATUSES:
        raise BadRequest(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    client = _client(url, admin_token_file, timeout)
    workers: list[dict[str, Any]] = []
    cursor: str | None = None
    while limit is None or len(workers) < limit:
        size = PAGE if limit is None else min(PAGE, limit - len(workers))
        doc = client.page_workers(
            status=status, q=search, limit=size, cursor=cursor, selector=selector
        )
        workers += [w for w in doc.get("workers") or [] if isinstance(w, dict)]
        cursor = doc.get("next_cursor") if isinstance(doc.get("next_cursor"), str) else None
        if cursor is None:
            break
    if as_json:
        emit_json({"workers": workers})
        return
    if len(workers) > SUMMARY_FIRST:
        _summary(client.summary(selector))
    rows = _worker_rows(workers, datetime.now(UTC))
    more = " (more match; raise --limit)" if cursor is not None else ""
    hz.table(f"{len(workers)} worker(s){more}", WORKER_COLUMNS, rows)


def _summary(doc: dict[str, Any]) -> None:
    """The fleet's counts, for a people's view of a large list."""
    by_status = doc.get("status")
    by_dns = doc.get("dns_status")
    by_status = by_status if isinstance(by_status, dict) else {}
    by_dns = by_dns if isinstance(by_dns, dict) else {}
    rows = [["workers", doc.get("total")]]
    rows += [[f"status {k}", v] for k, v in by_status.items()]
    rows += [[f"DNS {k}", v] for k, v in by_dns.items() if v]
    hz.table("the fleet", (hz.Col("what"), hz.Col("count")), rows)


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
            [hz.at(h.get("at")), h.get("previous"), h.get("status"), h.get("cause")]
            for h in history
            if isinstance(h, dict)
        ]
        cols = (hz.Col("at"), hz.Col("from"), hz.Col("to"), hz.Col("cause", whole=False))
        hz.table("history", cols, rows)


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
    """Sync every worker now; exits 0 when all synced, 11 if any failed, else 12 if outdated.

    On a terminal a progress bar follows the sweep; --json prints only the final counts.
    """
    client = _client(url, admin_token_file)
    if as_json or not sys.stderr.isatty():
        doc = client.sync_all(timeout)
    else:
        doc = _follow(client, timeout)
    if as_json:
        emit_json(doc)
    else:
        counts: list[tuple[str, Any]] = [
            (k, v)
            for k, v in doc.items()
            if isinstance(v, int) and not isinstance(v, bool) and k != "total"
        ]
        counts.append(("total", doc.get("total")))
        hz.table("sync of every worker", (hz.Col("outcome"), hz.Col("workers")), counts)
    if doc.get("failed"):
        raise typer.Exit(int(ExitCode.FAILED))
    if doc.get("outdated"):
        raise typer.Exit(int(ExitCode.OUTDATED))


def _follow(client: AdminClient, timeout: float) -> dict[str, Any]:
    """Start a background sweep and draw its progress until it ends; its final counts."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    job = client.start_sync_all()
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("syncing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sync", total=None, failed=0)
        while True:
            total, done = job.get("total"), job.get("done")
            bar.update(task, total=total or None, completed=done or 0, failed=job.get("failed", 0))
            if job.get("state") != "running":
                break
            if time.monotonic() > deadline:
                raise Unreachable(f"the sync of every worker did not end within {timeout:g} s")
            time.sleep(0.5)
            job = client.job(str(job.get("id")))
    if job.get("state") == "failed":
        raise VectisError(f"the sync of every worker failed: {job.get('error')}")
    return {k: job.get(k) for k in ("total", "synced", "failed", "outdated")}


@workers_app.command("delete")
def delete_worker(
    worker_id: WorkerId,
    yes: Yes = False,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Deregister a worker; its DNS record goes too."""
    client = _client(url, admin_token_file, timeout)
    if not yes:
        confirm_delete(f"worker {worker_id}", f"Delete worker {worker_id} and its DNS record?")
    doc = client.delete_worker(worker_id)
    if as_json:
        emit_json(doc if doc is not None else {"id": worker_id, "deleted": True})
    else:
        say(f"deleted worker {worker_id}")


def confirm_delete(what: str, question: str) -> None:
    """Ask `question` on a terminal; refuse without one (the caller's --yes skips this)."""
    if not sys.stdin.isatty():
        raise BadRequest(f"refusing to delete {what} without confirmation: pass --yes")
    if not typer.confirm(clean(question), err=True):
        say(f"{what} not deleted")
        raise typer.Exit(int(ExitCode.ERROR))


def read_config(stdin: str | None, file: Path | None) -> dict[str, Any]:
    """The JSON object of `--file FILE` or of stdin (`-`), exactly one of them."""
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
        return parse_config(text, str(file))
    return parse_config(sys.stdin.read(), "stdin")


ConfigStdin = Annotated[
    str | None, typer.Argument(help="`-` to read the config from stdin.", show_default=False)
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="JSON file holding the config object.", dir_okay=False),
]


@workers_app.command("set-config")
def set_config(
    worker_id: WorkerId,
    stdin: ConfigStdin = None,
    file: ConfigFile = None,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Set a worker's own config (a JSON object), over its groups' config.

    When its merged config changes, the worker is `outdated` until it applies it.
    """
    config = read_config(stdin, file)
    worker = _client(url, admin_token_file, timeout).set_config(worker_id, config)
    if as_json:
        emit_json(worker)
    else:
        say(f"worker {worker_id}: config revision {worker.get('desired_revision', '?')} set")
        _worker_fields(worker)


@workers_app.command("set-labels")
def set_labels(
    worker_id: WorkerId,
    labels: Annotated[
        list[str] | None,
        typer.Argument(
            help="KEY=VALUE pairs: the worker's labels, all of them.", show_default=False
        ),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every label.")] = False,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Replace a worker's labels; the config groups that select it may change with them."""
    from vectis.config import parse_label

    if bool(labels) == clear:
        raise BadRequest("give the labels as KEY=VALUE arguments, or --clear, one of them")
    found: dict[str, str] = {}
    for item in labels or []:
        try:
            key, value = parse_label(item)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        found[key] = value
    worker = _client(url, admin_token_file, timeout).set_labels(worker_id, found)
    if as_json:
        emit_json(worker)
    else:
        say(
            f"worker {worker_id}: labels set; desired revision "
            f"{worker.get('desired_revision', '?')}"
        )
        _worker_fields(worker)
