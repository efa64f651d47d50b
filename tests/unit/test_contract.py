"""vectis/contract.py is the one copy of the shared facts; this fails when a second one appears."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vectis import contract
from vectis.dashboard import pages
from vectis.dashboard.syncer import read_reply
from vectis.status import SyncStatus

ROOT = Path(__file__).resolve().parents[2] / "vectis"
SUFFIXES = (".py", ".js", ".sh")

_WORD = r"""(["'])(?:none|pending|synced|failed|outdated)\1"""
COPIES = {
    # Three or more statuses spelled as a list or tuple: STATUSES or DNS_STATUSES again.
    "a list of statuses": re.compile(rf"[\[(]\s*{_WORD}(?:\s*,\s*{_WORD}){{2,}}"),
    "the statuses in prose": re.compile(r"pending,\s*synced,\s*failed,\s*outdated"),
    "the worker-id regex": re.compile(r"\[a-z\]\+\(|-\[0-9a-f\]\{4\}"),
    "the revision cap": re.compile(r"\b2\s*\*\*\s*62\b|\b1\s*<<\s*62\b|\b46116860184273879\d\d\b"),
}


def copies(root: Path) -> dict[str, list[str]]:
    """{file relative to root: ["line N: what", ...]} for every copy outside contract.py."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.suffix not in SUFFIXES or rel == "contract.py" or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for what, pattern in COPIES.items():
                if pattern.search(line):
                    found.setdefault(rel, []).append(f"line {number}: {what}")
    return found


def test_no_second_copy_of_the_contract() -> None:
    assert copies(ROOT) == {}, "import these from vectis/contract.py instead"


@pytest.mark.parametrize(
    "line",
    [
        'STATUSES = ("pending", "synced", "failed", "outdated")',
        "const DNS = ['none', 'pending', 'synced', 'failed'];",
        'x = ["synced","failed","outdated"]',
        'raise BadRequest("must be one of pending, synced, failed, outdated")',
        'ID = re.compile(r"^[a-z]+(-[a-z]+)*-[0-9a-f]{4}$")',
        'route = "/w/{id:[a-z]+(?:-[a-z]+)*-[0-9a-f]{4}}"',
        "MAX = 2**62",
        "if n < 2 ** 62 - 1:",
        "cap = 4611686018427387903",
        "CAP=$((1 << 62))",
    ],
)
def test_the_check_finds_a_planted_copy(tmp_path: Path, line: str) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "contract.py").write_text(line + "\n")  # the one place it may be
    (tmp_path / "web" / "new.js").write_text("// fine\n" + line + "\n")
    assert list(copies(tmp_path)) == ["web/new.js"]
    assert copies(tmp_path)["web/new.js"][0].startswith("line 2: ")


def test_the_check_leaves_other_texts_alone(tmp_path: Path) -> None:
    lines = [
        'outcomes = {"synced", "failed", "outdated"}',  # sync outcomes, a set: not the statuses
        'if status in ("synced", "failed"):',
        '_WORKER_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")',  # signing's header grammar
        "limit = 2**63",
        "n = 2**620",
    ]
    (tmp_path / "mod.py").write_text("\n".join(lines) + "\n")
    assert copies(tmp_path) == {}


def test_sync_status_is_the_contracts_list() -> None:
    assert tuple(s.value for s in SyncStatus) == contract.STATUSES


def test_routes_and_pattern_agree() -> None:
    full = re.compile(contract.WORKER_ID_PATTERN)
    route = re.compile(contract.WORKER_ID_ROUTE)
    for text in (
        "brave-otter-3f2a",
        "a-0000",
        "x-y-z-ffff",
        "Brave-otter-3f2a",
        "otter-3f2",
        "brave--otter-3f2a",
        "-otter-3f2a",
        "brave-otter-3F2A",
        "3f2a",
        "sync",
    ):
        assert bool(full.fullmatch(text)) == bool(route.fullmatch(text)), text
    assert route.groups == 0


def test_the_page_imports_only_what_contract_js_exports() -> None:
    module = pages.static_file("contract.js")
    assert module == (contract.page_module().encode(), "text/javascript; charset=utf-8")
    exported = set(re.findall(r"^export const (\w+) = ", contract.page_module(), re.M))
    assert exported == {
        "STATUSES",
        "DNS_STATUSES",
        "WORKER_ID_PATTERN",
        "APPLY_FAILED",
        "GROUP_NAME_PATTERN",
        "GROUP_PRIORITY_MIN",
        "GROUP_PRIORITY_MAX",
    }
    imported: set[str] = set()
    for js in (ROOT / "dashboard" / "web").glob("*.js"):
        for names in re.findall(r'import \{([^}]*)\} from "\./contract\.js"', js.read_text()):
            imported |= {name.strip() for name in names.split(",") if name.strip()}
    assert imported and imported <= exported
    assert not (ROOT / "dashboard" / "web" / "contract.js").exists()  # served, never stored


def test_a_worker_answering_above_the_cap_is_a_bad_answer() -> None:
    at_cap = read_reply("w-a-0001", b'{"applied_revision": %d}' % contract.MAX_REVISION, 1024)
    assert not isinstance(at_cap, str) and at_cap.applied_revision == contract.MAX_REVISION
    over = read_reply("w-a-0001", b'{"applied_revision": %d}' % (contract.MAX_REVISION + 1), 1024)
    assert over == f"bad answer: applied_revision is above {contract.MAX_REVISION}"
