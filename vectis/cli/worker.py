"""`vectis worker ...`: the worker daemon and its local set-up."""

from __future__ import annotations

import typer

from vectis.errors import VectisError

app = typer.Typer(help="Run and set up the worker daemon.", no_args_is_help=True)


@app.command()
def serve() -> None:
    """Run the worker daemon (for systemd): answers signed POST /sync on port 3000."""
    raise VectisError("vectis worker serve is not built yet")
