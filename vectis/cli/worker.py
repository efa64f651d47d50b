"""`vectis worker ...`: the worker daemon and its local set-up."""

from __future__ import annotations

from typing import Annotated

import typer

from vectis.cli.render import emit_json, say

app = typer.Typer(help="Run and set up the worker daemon.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Listen address (env VECTIS_WORKER_HOST; worker.conf; 0.0.0.0)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Listen port, 1-65535 (env VECTIS_WORKER_PORT; worker.conf; 3000)."),
    ] = None,
    ip: Annotated[
        str | None,
        typer.Option(help="This worker's public IP for heartbeats (env VECTIS_PUBLIC_IP)."),
    ] = None,
) -> None:
    """Run the worker daemon (for systemd): answers signed POST /sync on port 3000."""
    from vectis.worker.app import run

    run(host=host, port=port, ip=ip)


@app.command()
def init(
    dashboard_url: Annotated[
        str | None, typer.Option(help="The dashboard's URL (env VECTIS_DASHBOARD_URL).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="The daemon's port, 1-65535 (env VECTIS_WORKER_PORT).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="The daemon's listen address (env VECTIS_WORKER_HOST).")
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            help="Make the TLS key the daemon serves its port with, if missing (--no-tls: "
            "make none; an existing key is kept either way)."
        ),
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Create the worker secret and TLS key if missing, write settings to worker.conf."""
    import os

    from vectis.worker.host import init_worker

    done = init_worker(
        dashboard_url=dashboard_url or None, port=port, host=host or None, env=os.environ, tls=tls
    )
    if json_output:
        emit_json(done)
        return
    if done["secret_created"]:
        say(f"created the worker secret {done['secret_path']} (mode 0600)")
    else:
        say(f"kept the existing worker secret {done['secret_path']}")
    if done["tls_created"]:
        say(f"created the TLS key {done['tls_path']} (mode 0600), pin {done['tls_pin']}")
    elif done["tls_pin"] is not None:
        say(f"kept the existing TLS key {done['tls_path']}, pin {done['tls_pin']}")
    else:
        say("no TLS key: the daemon serves plain HTTP")
    for key, value in done["changed"].items():
        say(f"set {key} = {value} in {done['conf_path']}")
    if not done["changed"]:
        say(f"{done['conf_path']} already holds these settings")
