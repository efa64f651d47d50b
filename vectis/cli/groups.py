"""`vectis dashboard groups ...`: config groups, whose config goes to every worker they select.

The options and the admin client are `admin.py`'s, looked up there at call time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from vectis.cli import admin
from vectis.cli import humanize as hz
from vectis.cli.admin import (
    DEFAULT_URL,
    ConfigFile,
    ConfigStdin,
    Json,
    Timeout,
    TokenFile,
    Url,
    Yes,
    confirm_delete,
    read_config,
)
from vectis.cli.render import emit_json, say

groups_app = typer.Typer(
    help="Config groups: a selector, a priority and a config merged into each selected "
    "worker's desired config.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="The group's name, e.g. edge-cache.")]


def _config_text(config: Any) -> str:
    return json.dumps(config, separators=(",", ":"), ensure_ascii=False)


def _group_fields(doc: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    pairs: list[tuple[str, Any]] = [
        ("name", doc.get("name")),
        ("selector", doc.get("selector") or "(every worker)"),
        ("priority", doc.get("priority")),
    ]
    if "selected" in doc:
        pairs.append(("selects", f"{doc['selected']} worker(s)"))
    pairs += [
        ("config", _config_text(doc.get("config"))),
        ("created", hz.at(doc.get("created_at"), now)),
        ("updated", hz.at(doc.get("updated_at"), now)),
    ]
    hz.fields(pairs)


@groups_app.command("list")
def list_groups(
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """List the config groups, by name."""
    doc = admin._client(url, admin_token_file, timeout).list_groups()
    if as_json:
        emit_json(doc)
        return
    groups = [g for g in doc.get("groups") or [] if isinstance(g, dict)]
    rows = [
        [g.get("name"), g.get("selector") or "(every worker)", g.get("priority"),
         _config_text(g.get("config"))]
        for g in groups
    ]  # fmt: skip
    cols = (
        hz.Col("name"),
        hz.Col("selector", whole=False),
        hz.Col("priority"),
        hz.Col("config", whole=False, drop=1),
    )
    hz.table(f"{len(groups)} config group(s)", cols, rows)


@groups_app.command("show")
def show_group(
    name: Name,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
) -> None:
    """Show one config group and how many workers it selects now."""
    doc = admin._client(url, admin_token_file, timeout).get_group(name)
    if as_json:
        emit_json(doc)
        return
    _group_fields(doc)


@groups_app.command("set")
def set_group(
    name: Name,
    stdin: ConfigStdin = None,
    file: ConfigFile = None,
    selector: Annotated[
        str,
        typer.Option(
            "--selector",
            "-l",
            help="The workers it selects, e.g. role=edge,region!=us; empty: every worker.",
        ),
    ] = "",
    priority: Annotated[
        int, typer.Option("--priority", help="On a key two groups set, the higher one wins.")
    ] = 0,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 60.0,
) -> None:
    """Create or replace a config group (its config a JSON object).

    Every selected worker whose merged config changes is `outdated` until it applies it.
    """
    config = read_config(stdin, file)
    doc = admin._client(url, admin_token_file, timeout).put_group(name, selector, priority, config)
    if as_json:
        emit_json(doc)
        return
    say(f"config group {name}: {doc.get('reconfigured', '?')} worker(s) given a new revision")
    _group_fields(doc)


@groups_app.command("delete")
def delete_group(
    name: Name,
    yes: Yes = False,
    url: Url = DEFAULT_URL,
    admin_token_file: TokenFile = None,
    as_json: Json = False,
    timeout: Timeout = 60.0,
) -> None:
    """Delete a config group; the workers it selected lose its keys."""
    client = admin._client(url, admin_token_file, timeout)
    if not yes:
        confirm_delete(f"config group {name}", f"Delete config group {name}?")
    doc = client.delete_group(name)
    if as_json:
        emit_json(doc)
    else:
        say(f"deleted config group {name}; {doc.get('reconfigured', '?')} worker(s) changed")
