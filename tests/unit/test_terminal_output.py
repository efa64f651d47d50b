"""Text from outside (workers, the dashboard's answers, worker.conf) never drives the terminal.

Every renderer of the CLI is fed documents whose every string carries terminal escapes, C1
controls, bidi overrides and rich markup; what it prints must show them escaped or literally.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from vectis.cli import admin, humanize, render
from vectis.cli.main import main

# Each one, raw, retitles the window, clears the screen, forges a link, is a C1 CSI, reverses
# the text that follows, or is rich markup that would be drawn instead of shown.
ATTACKS = (
    "\x1b]0;x\x07",
    "\x1b[2J",
    "\x1b]8;;http://evil\x1b\\",
    "\x9b",
    "\u202e",
    "[reverse]x[/reverse]",
    "[link=http://e]x[/link]",
)
ATTACK = "a" + "|".join(ATTACKS) + ":smile:\rz"
# What must never reach a terminal: C0 but the line break, DEL, C1, bidi overrides/isolates.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def assert_safe(output: str) -> None:
    """No raw control reaches the output; the escapes and the markup are shown as text."""
    found = RAW.search(output)
    assert found is None, f"raw {found.group()!r} in {output!r}"
    assert "\\x1b]0;x\\x07" in output and "\\x1b[2J" in output and "\\x9b" in output
    assert "\\x1b]8;;http://evil\\x1b\\" in output and "\\u202e" in output
    assert "[reverse]x[/reverse]" in output and "[link=http://e]x[/link]" in output
    assert ":smile:" in output and "\\r" in output


@pytest.mark.parametrize("attack", ATTACKS)
def test_clean_escapes_each_attack_and_keeps_its_text(attack: str) -> None:
    shown = render.clean(f"x{attack}y")
    assert RAW.search(shown) is None
    assert shown.isprintable() and shown.startswith("x") and shown.endswith("y")
    assert render.clean(shown) == shown  # idempotent: cleaning twice changes nothing


def test_clean_leaves_printable_text_alone() -> None:
    text = "brave-otter-3f2a, 12.5%, café, 日本語, naïve [brackets] \\x1b as typed"
    assert render.clean(text) is text


def test_clean_shows_line_breaks_only_where_asked() -> None:
    assert render.clean("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert render.clean("a\nb\rc", newlines=True) == "a\nb\\rc"


def test_no_code_point_passes_clean_unprintable() -> None:
    everything = "".join(map(chr, range(0x110000)))
    shown = render.clean(everything)
    assert shown.isprintable()
    # Every other character is kept as it is.
    assert shown.count("\\") >= sum(not c.isprintable() for c in everything)


def test_json_keeps_the_exact_value(capsys: pytest.CaptureFixture[str]) -> None:
    doc = {ATTACK: [ATTACK, {"k": ATTACK}]}
    render.emit_json(doc)
    out = capsys.readouterr().out
    assert json.loads(out) == doc
    assert RAW.search(out) is None  # json escapes the controls itself


def test_say_and_out_clean_but_keep_line_breaks(capsys: pytest.CaptureFixture[str]) -> None:
    render.say(f"first {ATTACK}\nsecond")
    render.out(f"first {ATTACK}\nsecond")
    got = capsys.readouterr()
    for stream in (got.out, got.err):
        assert_safe(stream)
        assert stream.splitlines()[1] == "second"


def test_fields_keep_a_value_on_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    render.fields([(ATTACK, f"{ATTACK}\nforged: line"), ("list", [ATTACK, None])])
    out = capsys.readouterr().out
    assert_safe(out)
    assert len(out.splitlines()) == 3 and "forged: line" not in out.splitlines()[1]


def test_both_tables_show_markup_as_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    render.table(ATTACK, [ATTACK, "b"], [[ATTACK, None]])
    humanize.table(ATTACK, [humanize.Col(ATTACK), humanize.Col("b", whole=False)], [[ATTACK, 1]])
    assert_safe(capsys.readouterr().out)


def test_a_narrow_table_falls_back_to_clean_fields(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    humanize.table(ATTACK, [humanize.Col("a"), humanize.Col("b")], [[ATTACK, ATTACK]])
    assert_safe(capsys.readouterr().out)


def hostile_worker() -> dict[str, Any]:
    """A worker document as a hostile worker or dashboard could make it: every text attacks."""
    return {
        "id": ATTACK,
        "status": "failed",
        "subdomain": ATTACK,
        "hostname": ATTACK,
        "ip": ATTACK,
        "port": ATTACK,
        "dns_status": ATTACK,
        "dns_error": ATTACK,
        "version": ATTACK,
        "applied_revision": ATTACK,
        "desired_revision": 2,
        "last_sync": ATTACK,
        "last_error": ATTACK,
        "consecutive_failures": ATTACK,
        "created_at": ATTACK,
        "config": {ATTACK: f"{ATTACK}\nsecond line"},
        "stats": {
            ATTACK: ATTACK,
            "cpu_percent": ATTACK,
            "memory": {"error": ATTACK},
            "swap": {"percent": ATTACK, "total": ATTACK},
            "disks": [{"mount": ATTACK, "percent": 5, "total": 10}, ATTACK],
            "network": {"bytes_sent": ATTACK, "bytes_recv": 1},
            "load_average": [ATTACK, 0.5],
            "nested": [{ATTACK: [ATTACK]}],
        },
        "metadata": {ATTACK: ATTACK},
        "history": [
            {"at": ATTACK, "previous": ATTACK, "status": ATTACK, "cause": ATTACK},
            {"at": "2026-01-02T03:04:05Z", "previous": "synced", "status": "failed"},
        ],
    }


class HostileClient:
    """Stands for the dashboard: answers every call with hostile documents."""

    url = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.worker = hostile_worker()

    def list_workers(self, status: str | None) -> dict[str, Any]:
        return {"workers": [self.worker, self.worker]}

    def page_workers(self, **query: Any) -> dict[str, Any]:
        return {"workers": [self.worker, self.worker], "next_cursor": None}

    def summary(self) -> dict[str, Any]:
        return {"total": 2, "status": {ATTACK: 2}, "dns_status": {ATTACK: 2}}

    def get_worker(self, worker_id: str) -> dict[str, Any]:
        return self.worker

    sync_worker = get_worker

    def set_config(self, worker_id: str, config: dict[str, Any]) -> dict[str, Any]:
        return {**self.worker, "desired_revision": ATTACK}

    def sync_all(self, timeout: float) -> dict[str, Any]:
        return {ATTACK: 1, "failed": 1, "total": 2}

    def delete_worker(self, worker_id: str) -> None:
        return None

    def token(self) -> dict[str, Any]:
        return {
            "id": ATTACK,
            "token": ATTACK,
            "description": ATTACK,
            "created_at": ATTACK,
            "expires_at": ATTACK,
            "uses": ATTACK,
            "max_uses": ATTACK,
            "state": ATTACK,
        }

    def create_token(self, *args: Any) -> dict[str, Any]:
        return self.token()

    def list_tokens(self) -> dict[str, Any]:
        return {"tokens": [self.token()]}

    def revoke_token(self, token_id: str) -> None:
        return None


COMMANDS = [
    ["workers", "list"],
    ["workers", "show", ATTACK],
    ["workers", "sync", ATTACK],
    ["workers", "sync-all"],
    ["workers", "delete", ATTACK, "--yes"],
    ["workers", "set-config", ATTACK, "-"],
    ["tokens", "create"],
    ["tokens", "list"],
    ["tokens", "revoke", ATTACK],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_admin_command_prints_hostile_answers_safely(
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(admin, "_client", lambda *a: HostileClient())
    monkeypatch.setattr("sys.stdin", _Stdin('{"k": "v"}'))
    with pytest.raises(SystemExit):
        main(["dashboard", *command])
    got = capsys.readouterr()
    assert RAW.search(got.out + got.err) is None, got
    if command[-1] in ("--yes", "revoke") or command[0:2] == ["tokens", "revoke"]:
        assert "\\x1b]0;x\\x07" in got.err  # the id the operator gave, quoted back
    else:
        assert_safe(got.out + got.err)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_admin_command_keeps_exact_json(
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = HostileClient()
    monkeypatch.setattr(admin, "_client", lambda *a: client)
    monkeypatch.setattr("sys.stdin", _Stdin('{"k": "v"}'))
    with pytest.raises(SystemExit):
        main(["dashboard", *command, "--json"])
    doc = json.loads(capsys.readouterr().out)
    if command[:2] in (["workers", "show"], ["workers", "sync"], ["workers", "list"]):
        worker = doc["workers"][0] if "workers" in doc else doc
        assert worker == hostile_worker()
    elif command[:2] == ["tokens", "list"]:
        assert doc["tokens"][0] == client.token()


def test_workers_show_shows_every_hostile_field_escaped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(admin, "_client", lambda *a: HostileClient())
    with pytest.raises(SystemExit):
        main(["dashboard", "workers", "show", "w"])
    out = capsys.readouterr().out
    shown = render.clean(ATTACK)
    for label in ("id:", "hostname:", "version:", "subdomain:", "last error:"):
        line = next(x for x in out.splitlines() if x.startswith(label))
        assert line.endswith(shown), line
    # The config is shown as JSON, whose escapes already make it one line.
    assert "config:" in out and "second line" in out and "\\nsecond line" in out


def test_an_error_quoting_outside_text_is_cleaned(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vectis.errors import VectisError

    def refuse(*args: Any) -> Any:
        raise VectisError(ATTACK)

    monkeypatch.setattr(admin, "_client", refuse)
    with pytest.raises(SystemExit):
        main(["dashboard", "workers", "list", "--json"])
    got = capsys.readouterr()
    assert json.loads(got.out)["message"] == ATTACK
    assert_safe(got.err)


def test_demo_output_is_cleaned(capsys: pytest.CaptureFixture[str]) -> None:
    from vectis.demo import _print

    _print(f"  worker            {ATTACK} at 127.0.0.1:1, {ATTACK}")
    assert_safe(capsys.readouterr().out)


class _Stdin:
    """A stdin that is not a terminal and holds `text`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def read(self) -> str:
        return self.text

    def isatty(self) -> bool:
        return False
