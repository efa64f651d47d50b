"""`vectis config show`: the config this worker applied, the one pending, the last apply error.

A thin shell over `vectis.worker.host.config_report`; reads worker.conf only (no daemon, no
network), so it is as light as `vectis status`.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="The config the dashboard pushed to this worker.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.command("show")
def show(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (fields in the README).")
    ] = False,
) -> None:
    """Show the applied config and revision, the pending one if any, and the last apply error.

    Exit code: 0, or 3 when worker.conf or the apply settings are unreadable.
    """
    import json
    import os

    from vectis.cli.render import emit_json, fields, out
    from vectis.configfile import read_conf
    from vectis.worker.host import apply_settings, config_report

    conf = read_conf()
    report = config_report(conf, apply_settings(conf, os.environ))
    if json_output:
        emit_json(report)
        return
    fields(
        [
            ("id", report["id"]),
            ("applied revision", report["applied_revision"]),
            ("pending revision", report["pending_revision"]),
            ("apply error", report["apply_error"]),
            ("apply error at", report["apply_error_at"]),
            ("apply file", report["apply_file"]),
            ("apply command", report["apply_command"]),
            ("apply timeout", f"{report['apply_timeout']:g} s"),
            ("labels", ",".join(f"{k}={v}" for k, v in report["labels"].items()) or None),
        ]
    )
    out("applied config:\n" + json.dumps(report["config"], indent=2, ensure_ascii=False))
    if report["pending_config"] is not None:
        pending = json.dumps(report["pending_config"], indent=2, ensure_ascii=False)
        out(f"pending config (revision {report['pending_revision']}):\n{pending}")
