"""`vectis dashboard ...`: the dashboard daemon and the operator's commands against it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from vectis.cli import admin, dnscmd, groups, tokens

app = typer.Typer(
    help="Run the dashboard, or manage a running one.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(admin.workers_app, name="workers")
app.add_typer(tokens.tokens_app, name="tokens")
app.add_typer(groups.groups_app, name="groups")
app.add_typer(dnscmd.app, name="dns")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [VECTIS_DASHBOARD_HOST; 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [VECTIS_DASHBOARD_PORT; 8080]")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the database lives [VECTIS_DATA_DIR; /var/lib/vectis as root]"),
    ] = None,
    zone: Annotated[
        str | None, typer.Option(help="Parent domain of every worker's subdomain [VECTIS_ZONE]")
    ] = None,
    dns_backend: Annotated[
        str | None,
        typer.Option(help="none, route53 or rfc2136 (memory: tests) [VECTIS_DNS_BACKEND; none]"),
    ] = None,
    route53_zone_id: Annotated[
        str | None, typer.Option(help="Route53 hosted zone ID [VECTIS_ROUTE53_ZONE_ID]")
    ] = None,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the admin token [else VECTIS_ADMIN_TOKEN, else generated]"),
    ] = None,
    enroll_token_file: Annotated[
        Path | None,
        typer.Option(help="File holding an enrollment token accepted besides API-made ones"),
    ] = None,
    new_admin_token: Annotated[
        bool, typer.Option(help="Replace the stored admin token by a new one, printed once")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="postgresql://user@host/db: keep the data in PostgreSQL, not SQLite in the "
            "data dir [VECTIS_DATABASE_URL]",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this PEM certificate (chain) [VECTIS_TLS_CERT]"),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="The PEM private key of --tls-cert [VECTIS_TLS_KEY]"),
    ] = None,
) -> None:
    """Run the dashboard daemon: JSON API, web page, periodic sync (stops on SIGTERM)."""
    from vectis.dashboard.server import run
    from vectis.dashboard.settings import load_settings

    settings = load_settings(
        os.environ,
        host=host,
        port=port,
        data_dir=str(data_dir) if data_dir else None,
        zone=zone,
        dns_backend=dns_backend,
        route53_zone_id=route53_zone_id,
        admin_token_file=str(admin_token_file) if admin_token_file else None,
        enroll_token_file=str(enroll_token_file) if enroll_token_file else None,
        new_admin_token=new_admin_token,
        database_url=database_url,
        tls_cert=str(tls_cert) if tls_cert else None,
        tls_key=str(tls_key) if tls_key else None,
    )
    run(settings)


@app.command("migrate-store")
def migrate_store(
    to: Annotated[
        str,
        typer.Option("--to", help="postgresql://user@host/db: the database to move the fleet into"),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The data dir of the SQLite registry [VECTIS_DATA_DIR]"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Move into a database that holds other data too (kept)")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout")] = False,
) -> None:
    """Copy the SQLite registry (workers, secrets, history, tokens, settings) into PostgreSQL.

    Stop the dashboard first. Safe to run again; workers keep their ids and secrets.
    """
    import asyncio

    from vectis.cli.render import emit_json, say, table
    from vectis.dashboard.settings import load_settings
    from vectis.dashboard.store_move import move_store

    settings = load_settings(
        os.environ, data_dir=str(data_dir) if data_dir else None, database_url=to
    )
    assert settings.database_url is not None
    report = asyncio.run(move_store(settings.db_path, settings.database_url, force=force))
    if json_out:
        emit_json(report.to_json())
        return
    rows = [
        ("workers", f"{report.workers} ({report.workers_updated} there already)"),
        ("history entries", report.history),
        ("enrollment tokens", report.tokens),
        ("settings (meta)", report.meta),
        ("DNS records to delete", report.dns_orphans),
    ]
    table(f"Moved {report.source} to {report.target}", ["what", "rows"], rows)
    for line in report.foreign:
        say(f"kept in the target: {line}")
