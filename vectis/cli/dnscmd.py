"""`vectis dashboard dns ...`: check the DNS records the dashboard keeps."""

from __future__ import annotations

import typer

app = typer.Typer(help="Check and repair the workers' DNS records.", no_args_is_help=True)
