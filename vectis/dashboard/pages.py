"""The web page's files and `install.sh`, served from the installed package."""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

from vectis import contract
from vectis.errors import NotFound

CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Files the dashboard writes itself rather than reads from web/.
GENERATED = {"contract.js": contract.page_module}

PLACEHOLDER = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vectis dashboard</title></head>
<body><h1>Vectis dashboard</h1>
<p>The web page is not installed. The JSON API is at <code>/infra/workers</code>.</p>
</body></html>
"""


def _web() -> Traversable:
    return resources.files("vectis.dashboard").joinpath("web")


def content_type(name: str) -> str:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:].lower() if dot >= 0 else "", "application/octet-stream")


def static_file(name: str) -> tuple[bytes, str]:
    """(bytes, content type) of a generated file or one directly inside web/; else NotFound."""
    if name in GENERATED:
        return GENERATED[name]().encode(), content_type(name)
    if not _NAME.fullmatch(name) or ".." in name:
        raise NotFound(f"no file {name[:64]!r}")
    web = _web()
    try:
        entry = web.joinpath(name)
        if not entry.is_file():
            raise NotFound(f"no file {name!r}")
        return entry.read_bytes(), content_type(name)
    except (OSError, ValueError):
        raise NotFound(f"no file {name!r}") from None


def index_page() -> bytes:
    """web/index.html, or a short placeholder while the page is not installed."""
    try:
        return static_file("index.html")[0]
    except NotFound:
        return PLACEHOLDER


def install_script() -> bytes:
    """The package's copy of scripts/install.sh."""
    try:
        entry = resources.files("vectis").joinpath("scripts").joinpath("install.sh")
        return entry.read_bytes()
    except (OSError, ValueError):
        raise NotFound("install.sh is not part of this installation") from None
