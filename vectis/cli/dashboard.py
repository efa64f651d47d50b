"""`vectis dashboard ...`: the dashboard daemon and the operator's commands against it."""

from __future__ import annotations

import typer

from vectis.errors import VectisError

app = typer.Typer(help="Run the dashboard, or manage a running one.", no_args_is_help=True)


@app.command()
def serve() -> None:
    """Run the dashboard daemon: JSON API, web page, periodic sync."""
    raise VectisError("vectis dashboard serve is not built yet")
