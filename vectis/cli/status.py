"""`vectis status`: this worker's registration and sync state, and whether the daemon answers."""

from __future__ import annotations

from typing import Annotated

import typer


def status(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (fields in the README).")
    ] = False,
) -> None:
    """Show this worker's status: ID, subdomain, IP, sync status, last sync, error, service.

    Exit code: 0 synced, 10 pending, 11 failed, 12 outdated, 3 unreadable settings.
    """
    import os

    from vectis.cli.render import emit_json, fields, say
    from vectis.configfile import read_conf, secret_path, tls_file
    from vectis.crypto.secrets import read_secret_file
    from vectis.worker.host import probe_service, resolve_settings, status_exit_code, status_report

    conf = read_conf()
    settings = resolve_settings(conf, os.environ)
    # The daemon refuses a malformed or too open secret, and a registered worker without one:
    # so does its status. A worker not yet set up is just pending, with a hint.
    secret = secret_path()
    if secret.exists() or conf.registered:
        read_secret_file(secret)
    else:
        say(f"no worker secret at {secret} yet: run 'vectis worker init' to set this worker up")
    report = status_report(
        conf, settings, probe_service(settings.host, settings.port, tls=tls_file().exists())
    )
    if json_output:
        emit_json(report)
    else:
        fields([(key, value) for key, value in report.items() if value is not None or key in KEEP])
        theirs = report["dashboard_version"]
        if theirs is not None and theirs != report["version"]:
            say(
                f"this worker runs vectis {report['version']} and its dashboard {theirs}: "
                "run the dashboard's install.sh again to upgrade"
            )
    code = status_exit_code(report)
    if code:
        raise typer.Exit(int(code))


# Shown as "-" even when empty, so people see that there is no error or no last sync.
KEEP = {"id", "subdomain", "ip", "last_sync", "error", "dashboard_url"}
