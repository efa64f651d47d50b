"""Entry points: `vectis`, `vectis-status`, `vectis-sync`.

The command modules import their heavy dependencies (aiohttp, boto3, dnspython) inside the
command functions, so `vectis status` pays only for what it uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from vectis import __version__
from vectis.cli import configcmd, dashboard, flows, status, worker
from vectis.cli.render import emit_json, say
from vectis.errors import ExitCode, VectisError

HELP = "Keep a fleet of servers registered, reachable, named and in sync with one dashboard."

app = typer.Typer(
    help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"vectis {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Keep a fleet of servers registered, reachable, named and in sync with one dashboard."""


app.add_typer(worker.app, name="worker")
app.add_typer(dashboard.app, name="dashboard")
app.add_typer(configcmd.app, name="config")
app.command("status")(status.status)
app.command("register")(flows.register)
app.command("sync")(flows.sync)
app.command("rotate-secret")(flows.rotate_secret)
app.command("rotate-tls-key")(flows.rotate_tls_key)
app.command("demo")(flows.demo)


def _single(command: Callable[..., Any], help_text: str | None) -> typer.Typer:
    one = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    one.command(help=help_text)(command)
    return one


@contextmanager
def _reporting(prog_name: str, json_output: bool) -> Iterator[None]:
    """Turn VectisError into one line on stderr and its exit code.

    With `--json`, stdout still carries one document: `{"error": code, "message": text}`.
    """
    try:
        yield
    except VectisError as exc:
        if json_output:
            emit_json({"error": exc.code, "message": exc.message})
        say(f"{prog_name}: {exc.message}")
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(int(ExitCode.ERROR))


def run(application: typer.Typer, args: Sequence[str] | None, prog_name: str) -> None:
    """Run a typer app, turning VectisError into one line on stderr and its exit code."""
    argv = list(args) if args is not None else sys.argv[1:]
    with _reporting(prog_name, "--json" in argv):
        application(args=argv, prog_name=prog_name)


# The hot command lines, called without typer's parsing and dispatch: on this machine that
# costs more than the command itself (it imports pydantic to look for its types). Anything
# else, --help included, goes through typer, so behaviour and help stay those of the app.
_FAST_STATUS = {(): False, ("--json",): True}


def _fast_status(argv: Sequence[str], prog_name: str) -> bool:
    """Run `status [--json]` directly if `argv` is exactly that; return whether it ran."""
    json_output = _FAST_STATUS.get(tuple(argv))
    if json_output is None:
        return False
    with _reporting(prog_name, json_output):
        try:
            status.status(json_output=json_output)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
    sys.exit(0)


def main(args: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["status"] and _fast_status(argv[1:], "vectis"):
        return
    run(app, args, "vectis")


def status_main(args: Sequence[str] | None = None) -> None:
    if _fast_status(sys.argv[1:] if args is None else list(args), "vectis-status"):
        return
    run(_single(status.status, status.status.__doc__), args, "vectis-status")


def sync_main(args: Sequence[str] | None = None) -> None:
    run(_single(flows.sync, flows.sync.__doc__), args, "vectis-sync")
