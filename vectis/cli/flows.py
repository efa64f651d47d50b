"""`vectis register`, `vectis sync`, `vectis demo`: the worker's side of the flows.

Thin shells: parse, call one use-case in `vectis.worker.flows` or `vectis.demo`, render.
Those modules are imported inside the commands so that other commands do not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from vectis.cli.render import emit_json, fields, say

if TYPE_CHECKING:
    from vectis.worker.flows import FlowResult
    from vectis.worker.key_rotation import KeyRotationResult
    from vectis.worker.rotation import RotationResult

TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Enrollment token (prefer VECTIS_TOKEN or --token-file: a flag shows in ps).",
        show_default=False,
    ),
]
TokenFileOpt = Annotated[
    str | None,
    typer.Option("--token-file", help="Read the enrollment token from FILE (- for stdin)."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--dashboard-url",
        help="Dashboard URL (env VECTIS_DASHBOARD_URL; else worker.conf; remembered).",
    ),
]
#: The rotations' --dashboard-url: used, not remembered.
RotateUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--dashboard-url", help="Dashboard URL (env VECTIS_DASHBOARD_URL; else worker.conf)."
    ),
]
IpOpt = Annotated[
    str | None,
    typer.Option("--ip", help="This worker's public IP (env VECTIS_PUBLIC_IP; else detected)."),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        "--port",
        help="The worker daemon's port to report, 1-65535 (env VECTIS_WORKER_PORT; else "
        "worker.conf).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        help="A label KEY=VALUE to register with (repeatable; env VECTIS_LABELS=k=v,k2=v2; "
        "else worker.conf's; remembered).",
        show_default=False,
    ),
]


def _run(
    use_case: str,
    token: str | None,
    token_file: str | None,
    dashboard_url: str | None,
    ip: str | None,
    port: int | None,
    as_json: bool,
    labels: list[str] | None = None,
) -> None:
    import os

    from vectis.worker import flows

    options = flows.FlowOptions(
        token=flows.read_token(token, token_file, os.environ),
        dashboard_url=dashboard_url,
        ip=ip,
        port=port,
        labels=labels,
    )
    result = flows.register(options) if use_case == "register" else flows.sync(options)
    _render(result, as_json)
    raise typer.Exit(int(result.exit_code))


def _render(result: FlowResult, as_json: bool) -> None:
    data = result.as_json()
    if as_json:
        emit_json(data)
    elif result.conf.registered:
        fields(
            [
                ("id", data["id"]),
                ("subdomain", data["subdomain"]),
                ("ip", data["ip"]),
                ("port", data["port"]),
                ("sync status", data["sync_status"]),
                ("last sync", data["last_sync"]),
                ("error", data["error"]),
                ("applied revision", data["applied_revision"]),
            ]
        )
    if result.error is not None:
        say(f"vectis: {result.error.message}")
    elif result.action == "register":
        say(f"registered as {data['id']} ({data['subdomain'] or 'no DNS name'})")
    elif result.config_applied:
        say(f"applied config revision {data['applied_revision']}")


def register(
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    dashboard_url: UrlOpt = None,
    ip: IpOpt = None,
    port: PortOpt = None,
    as_json: JsonOpt = False,
    label: LabelOpt = None,
) -> None:
    """Register this worker with the dashboard (needs an enrollment token)."""
    _run("register", token, token_file, dashboard_url, ip, port, as_json, label)


def sync(
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    dashboard_url: UrlOpt = None,
    ip: IpOpt = None,
    port: PortOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register if not yet registered and a token is given; else send a signed heartbeat."""
    _run("sync", token, token_file, dashboard_url, ip, port, as_json)


def demo(
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Dashboard port (default: a free one)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=20, help="How many local workers to run.")
    ] = 1,
) -> None:
    """Run a dashboard and a worker on this machine, registered and synced, until Ctrl-C."""
    from vectis.demo import run_demo

    raise typer.Exit(run_demo(dashboard_port=port, workers=workers))


def rotate_secret(
    dashboard_url: RotateUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace this worker's secret: the dashboard switches first, then this worker."""
    from vectis.worker import flows

    result = flows.rotate_secret(flows.FlowOptions(dashboard_url=dashboard_url))
    _rotated(result, as_json)


def rotate_tls_key(
    dashboard_url: RotateUrlOpt = None,
    ip: IpOpt = None,
    port: PortOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace this worker's TLS key: announced to the dashboard, served, then the old retired."""
    from vectis.worker import flows

    options = flows.FlowOptions(dashboard_url=dashboard_url, ip=ip, port=port)
    _rotated(flows.rotate_tls_key(options), as_json, ("tls pin", "tls_pin"))


def _rotated(
    result: RotationResult | KeyRotationResult, as_json: bool, *more: tuple[str, str]
) -> None:
    """A rotation's outcome: its JSON document or its fields (`more`: (label, key) pairs
    besides id, rotated and pending), its message, and its exit code."""
    data = result.as_json()
    if as_json:
        emit_json(data)
    else:
        shown = (("id", "id"), ("rotated", "rotated"), ("pending", "pending"), *more)
        fields([(label, data[key]) for label, key in shown])
    say(f"vectis: {result.message}" if result.error is not None else result.message)
    raise typer.Exit(int(result.exit_code))
