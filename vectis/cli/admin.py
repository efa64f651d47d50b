"""`vectis dashboard workers ...` and `vectis dashboard tokens ...`: the operator's commands."""

from __future__ import annotations

import typer

workers_app = typer.Typer(
    help="List, show, sync, delete and configure workers.", no_args_is_help=True
)
tokens_app = typer.Typer(help="Create, list and revoke enrollment tokens.", no_args_is_help=True)
