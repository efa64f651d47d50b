"""`vectis dashboard tokens ...`: create, list and revoke enrollment tokens.

The options and the admin client are `admin.py`'s, looked up there at call time.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from vectis.cli import admin
from vectis.cli import humanize as hz
from vectis.cli.admin import DEFAULT_URL, Json, Timeout, TokenFile, Url
from vectis.cli.render import emit_json, say

tokens_app = typer.Typer(help="Create, list and revoke enrollment tokens.", no_args_is_help=True)


@tokens_app.command("create")
def create_token(
    description: Annotated[
        str | None, typer.Option("--description", help="What the token is for.")
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", min=1, help="Seconds until the token expires."),
    ] = None,
    max_uses: Annotated[
        int | None, typer.Option("--max-uses", min=1, help="Registrations it allows.")
    ] = None,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Create an enrollment token; it is shown once, here."""
    client = admin._client(url, admin_token_file, timeout)
    doc = client.create_token(description, expires_in, max_uses)
    if as_json:
        emit_json(doc)
        return
    token = str(doc.get("token"))
    expires = doc.get("expires_at")
    hz.fields(
        [
            ("id", doc.get("id")),
            ("token", token),
            ("description", doc.get("description")),
            ("expires", "never" if expires is None else hz.at(expires, datetime.now(UTC))),
            ("max uses", doc.get("max_uses") or "unlimited"),
        ]
    )
    # The token goes through the environment, never on sudo's command line (visible in ps).
    say("The token is shown only now. Install a worker with:")
    say(
        f"  export VECTIS_TOKEN={shlex.quote(token)} VECTIS_DASHBOARD_URL={shlex.quote(client.url)}"
    )
    say(
        f"  curl -fsSL {shlex.quote(client.url + '/install.sh')} "
        "| sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash"
    )


@tokens_app.command("list")
def list_tokens(
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """List enrollment tokens (never the tokens themselves)."""
    doc = admin._client(url, admin_token_file, timeout).list_tokens()
    if as_json:
        emit_json(doc)
        return
    tokens = [t for t in doc.get("tokens") or [] if isinstance(t, dict)]
    now = datetime.now(UTC)
    rows = [
        [
            t.get("id"),
            t.get("description"),
            hz.ago(t.get("created_at"), now),
            "never" if t.get("expires_at") is None else hz.ago(t.get("expires_at"), now),
            f"{t.get('uses', 0)}/{t.get('max_uses') or '∞'}",
            _token_state(t),
        ]
        for t in tokens
    ]
    hz.table(f"{len(tokens)} token(s)", TOKEN_COLUMNS, rows)


TOKEN_COLUMNS = (
    hz.Col("id"),
    hz.Col("description", whole=False),
    hz.Col("created", drop=2),
    hz.Col("expires"),
    hz.Col("uses", drop=1),
    hz.Col("state"),
)


def _token_state(token: dict[str, Any]) -> str:
    if isinstance(token.get("state"), str):
        return str(token["state"])
    if token.get("revoked") or token.get("revoked_at"):
        return "revoked"
    return "active"


@tokens_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `tokens list`).")],
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Revoke an enrollment token: it registers no more workers."""
    doc = admin._client(url, admin_token_file, timeout).revoke_token(token_id)
    if as_json:
        emit_json(doc if doc is not None else {"id": token_id, "revoked": True})
    else:
        say(f"revoked token {token_id}")
