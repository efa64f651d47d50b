"""docs/protocol.md stays the one description of the wire that the code points to.

Comments point to its sections as `docs/protocol.md#<anchor>`; every such anchor must be a
heading there, no comment may point to a contract document outside the repository, and every
route either daemon serves must be described.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "protocol.md"
SOURCE_SUFFIXES = {".py", ".js", ".sh", ".html", ".css", ".md", ".toml"}
# Built in two parts so that this file does not match itself.
OUTSIDE_CONTRACT = re.compile(r"\b" + "SP" + r"EC(?:\s+sections?\b|'s\b|\s+\d)")
ANCHOR_REF = re.compile(r"docs/protocol\.md#([A-Za-z0-9_-]+)")
LOCAL_LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")
# The other accepted form: "(docs/protocol.md, Signed requests)", naming headings.
NAMED_REF = re.compile(r"docs/protocol\.md, ([^)\n]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def protocol_anchors() -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in PROTOCOL.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        match = re.match(r"#{1,6}\s+(.*)", line)
        if in_fence or match is None:
            continue
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def source_files() -> list[Path]:
    files = []
    for top in ("vectis", "tests", "scripts", "docs"):
        for path in (ROOT / top).rglob("*"):
            if (
                path.is_file()
                and path.suffix in SOURCE_SUFFIXES
                and "__pycache__" not in path.parts
            ):
                files.append(path)
    return [*files, ROOT / "README.md"]


def test_github_anchor_matches_githubs_rules() -> None:
    assert github_anchor("Signed requests") == "signed-requests"
    assert (
        github_anchor("Worker builds: /dist and install.sh") == "worker-builds-dist-and-installsh"
    )
    assert github_anchor("The `vectis` command") == "the-vectis-command"


def test_no_comment_points_to_the_outside_contract() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in source_files()
        if path.parts[-2:] != ("unit", "test_docs.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_CONTRACT.search(line)
    ]
    assert offenders == [], "point to docs/protocol.md#<section> instead"


def test_every_protocol_anchor_in_the_code_exists() -> None:
    anchors = protocol_anchors()
    referenced: dict[str, list[str]] = {}
    for path in source_files():
        for anchor in ANCHOR_REF.findall(path.read_text(encoding="utf-8")):
            referenced.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    for anchor in LOCAL_LINK.findall(PROTOCOL.read_text(encoding="utf-8")):
        referenced.setdefault(anchor, []).append("docs/protocol.md")
    assert len(referenced) >= 10, "the code is expected to point to the protocol's sections"
    missing = {a: where for a, where in referenced.items() if a not in anchors}
    assert missing == {}, f"anchors with no heading in docs/protocol.md: {missing}"


def test_every_protocol_section_named_in_the_code_exists() -> None:
    titles = {github_anchor(t) for t in protocol_anchors()}
    missing = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in source_files()
        for names in NAMED_REF.findall(path.read_text(encoding="utf-8"))
        for name in re.split(r",\s*|\s+and\s+", names)
        if github_anchor(name) not in titles
    ]
    assert missing == [], "sections named in the code with no such heading in docs/protocol.md"


def _documented(method: str, path: str, text: str) -> bool:
    """Whether "`METHOD path`" appears, a route placeholder matching any `<name>` segment."""
    pattern = ""
    for part in re.split(r"(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})", path):
        if part.startswith("{"):
            pattern += r"[^\s/`]*<[a-z_]+>[^\s/`]*"
        else:
            pattern += re.escape(part)
    return re.search(rf"`{method} {pattern}`", text) is not None


def test_documented_handles_placeholders() -> None:
    text = "| `GET /dist/vectis-<version>-py3-none-any.whl` | `DELETE /infra/tokens/<id>` |"
    assert _documented("GET", "/dist/{name:vectis-[^/]+[.]whl}", text)
    assert _documented("DELETE", "/infra/tokens/{token_id}", text)
    assert not _documented("GET", "/infra/tokens/{token_id}", text)
    assert not _documented("DELETE", "/infra/tokens", text)


def test_every_dashboard_route_is_documented(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    from vectis.dashboard.app import create_app
    from vectis.dashboard.settings import DashboardSettings

    settings = dataclasses.replace(DashboardSettings(), data_dir=tmp_path)
    app = create_app(settings)
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert ("POST", "/infra/workers/auto-register") in routes
    text = PROTOCOL.read_text(encoding="utf-8")
    missing = sorted(f"{m} {p}" for m, p in routes if not _documented(m, p, text))
    assert missing == [], "routes the dashboard serves that docs/protocol.md does not list"


def test_the_worker_routes_are_documented() -> None:
    from vectis.worker.app import SYNC_PATH

    text = PROTOCOL.read_text(encoding="utf-8")
    assert f"`POST {SYNC_PATH}`" in text
    assert "`GET /healthz`" in text
