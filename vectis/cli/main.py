"""Entry points: `vectis`, `vectis-status`, `vectis-sync`.

The command modules import their heavy dependencies (aiohttp, boto3, dnspython) inside the
command functions, so `vectis status` pays only for what it uses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from vectis.cli import dashboard, flows, status, worker
from vectis.errors import ExitCode, VectisError

HELP = "Keep a fleet of servers registered, reachable, named and in sync with one dashboard."

app = typer.Typer(
    help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False
)
app.add_typer(worker.app, name="worker")
app.add_typer(dashboard.app, name="dashboard")
app.command("status")(status.status)
app.command("register")(flows.register)
app.command("sync")(flows.sync)
app.command("demo")(flows.demo)


def _single(command: object, help_text: str | None) -> typer.Typer:
    one = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    one.command(help=help_text)(command)  # type: ignore[arg-type]
    return one


def run(application: typer.Typer, args: Sequence[str] | None, prog_name: str) -> None:
    """Run a typer app, turning VectisError into one line on stderr and its exit code."""
    try:
        application(args=list(args) if args is not None else None, prog_name=prog_name)
    except VectisError as exc:
        sys.stderr.write(f"{prog_name}: {exc.message}\n")
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(int(ExitCode.ERROR))


def main(args: Sequence[str] | None = None) -> None:
    run(app, args, "vectis")


def status_main(args: Sequence[str] | None = None) -> None:
    run(_single(status.status, status.status.__doc__), args, "vectis-status")


def sync_main(args: Sequence[str] | None = None) -> None:
    run(_single(flows.sync, flows.sync.__doc__), args, "vectis-sync")
