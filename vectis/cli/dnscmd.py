"""`vectis dashboard dns ...`: check the DNS records the dashboard keeps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from vectis.errors import ExitCode

app = typer.Typer(
    help="Check and repair the workers' DNS records.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _group() -> None:
    """Check and repair the workers' DNS records."""


@app.command()
def check(
    fix: Annotated[bool, typer.Option(help="Create, correct or remove what differs")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout")] = False,
    resolve: Annotated[
        bool, typer.Option(help="Also ask the zone's authoritative servers for each name")
    ] = True,
    server: Annotated[
        str | None,
        typer.Option(help="Authoritative server to ask, HOST[:PORT] [VECTIS_DNS_CHECK_SERVER]"),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="The dashboard's data dir [VECTIS_DATA_DIR]")
    ] = None,
    zone: Annotated[str | None, typer.Option(help="The zone [VECTIS_ZONE]")] = None,
    dns_backend: Annotated[
        str | None, typer.Option(help="none, route53 or rfc2136 [VECTIS_DNS_BACKEND]")
    ] = None,
    route53_zone_id: Annotated[
        str | None, typer.Option(help="Route53 hosted zone ID [VECTIS_ROUTE53_ZONE_ID]")
    ] = None,
) -> None:
    """Compare every worker's record with the DNS provider (run on the dashboard's host).

    Exit 0 when every name holds what it should (after --fix), 1 when drift remains.
    """
    import asyncio

    from vectis.cli.render import emit_json, say, table
    from vectis.dashboard.reconcile import check_dashboard
    from vectis.dashboard.settings import load_settings
    from vectis.envsettings import env_text

    settings = load_settings(
        os.environ,
        data_dir=str(data_dir) if data_dir else None,
        zone=zone,
        dns_backend=dns_backend,
        route53_zone_id=route53_zone_id,
    )
    server = server or env_text(os.environ, "VECTIS_DNS_CHECK_SERVER")
    report = asyncio.run(check_dashboard(settings, fix=fix, server=server, resolve=resolve))
    if json_out:
        emit_json(report.to_json())
    elif report.backend == "none":
        say("the DNS backend is `none`: Vectis keeps no records to check")
    else:
        rows = [
            (
                r.name,
                " ".join(r.expected) or "(none)",
                " ".join(r.provider) or "(none)",
                "-" if r.resolved is None else " ".join(r.resolved) or "(none)",
                r.state + (" -> fixed" if r.fixed else ""),
                r.error,
            )
            for r in report.records
        ]
        columns = ["name", "expected", "provider", "resolves", "state", "error"]
        table(f"DNS records in {report.zone} ({report.backend})", columns, rows)
        counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
        say(f"{len(report.records)} names: {counts or 'none'}")
    if not report.clean:
        raise typer.Exit(int(ExitCode.ERROR))
