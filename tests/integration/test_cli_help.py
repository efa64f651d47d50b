"""The `vectis` command's surface: every group and command the contract names is there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.support import run_cli

TOP = ("worker", "dashboard", "status", "sync", "register", "demo", "rotate-secret")


def _commands(help_text: str) -> set[str]:
    """Command names from the rich help's Commands panel."""
    panel = help_text.split("Commands", 1)[1]
    return set(re.findall(r"^│ ([a-z][a-z-]*)\s", panel, flags=re.M))


def test_top_level_help_lists_every_command() -> None:
    done = run_cli(["--help"], env={"COLUMNS": "120"})
    assert done.returncode == 0, done.stderr
    assert set(TOP) <= _commands(done.stdout)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        (["worker"], {"serve", "init"}),
        (["dashboard"], {"serve", "workers", "tokens", "dns"}),
        (["dashboard", "workers"], {"list", "show", "sync", "sync-all", "delete", "set-config"}),
        (["dashboard", "tokens"], {"create", "list", "revoke"}),
        (["dashboard", "dns"], {"check"}),
    ],
)
def test_groups_list_their_commands(group: list[str], expected: set[str]) -> None:
    done = run_cli([*group, "--help"], env={"COLUMNS": "120"})
    assert done.returncode == 0, done.stderr
    assert expected <= _commands(done.stdout)


def test_unknown_command_is_a_usage_error_without_traceback() -> None:
    done = run_cli(["frobnicate"])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("name", ["vectis-status", "vectis-sync"])
def test_operator_names_are_installed(name: str) -> None:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on PATH (the package is not installed)")
    done = subprocess.run([path, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Usage" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["register", "--json", "--token", "t", "--dashboard-url", "http://127.0.0.1:9"],
        ["sync", "--json", "--token", "t"],
        ["dashboard", "workers", "list", "--json", "--url", "http://127.0.0.1:9"],
    ],
)
def test_json_errors_still_print_one_document(args: list[str]) -> None:
    """No secret, no dashboard URL, no dashboard: stdout still holds one JSON document."""
    done = run_cli(args, env={"VECTIS_ADMIN_TOKEN": "x" * 32})
    assert done.returncode not in (0, 2)
    doc = json.loads(done.stdout)
    assert set(doc) == {"error", "message"} and doc["message"] in done.stderr


def test_version() -> None:
    from vectis import __version__

    done = run_cli(["--version"])
    assert (done.returncode, done.stdout) == (0, f"vectis {__version__}\n")
