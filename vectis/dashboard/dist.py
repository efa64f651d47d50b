"""The worker build the dashboard serves: a wheel of the vectis it runs, and its dependency pins.

Workers never ask a package index for `vectis` (on the public index that name is another
project's): the `install.sh` the dashboard serves names this wheel's URL and SHA-256, and the
constraints that pin the dependencies to the versions the dashboard runs with.

The wheel is packed from the files of the imported `vectis` package (a checkout for an
editable install, site-packages otherwise) and the installed distribution's metadata, with
`zipfile`: no build backend, no network, nothing written into a source tree (a `pip wheel` of
the checkout takes seconds, needs setuptools from the index and leaves `build/` behind).
Packing takes about 0.1 s; it runs in a thread on the first request that needs it, and the
result is kept in the data dir, keyed by version and content hash. The zip is deterministic
(sorted entries, fixed times), so the same code always gives the same SHA-256.
`VECTIS_WORKER_WHEEL` names a wheel to serve instead, checked at start (`check_wheel_file`).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import logging
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import vectis
from vectis import __version__
from vectis.errors import ConfigError, ServiceUnavailable

if TYPE_CHECKING:
    from packaging.markers import Marker

log = logging.getLogger("vectis.dashboard")

DIST_NAME = "vectis"
TAG = "py3-none-any"
WHEEL_PATH = "/dist/{name}"
CONSTRAINTS_PATH = "/dist/constraints.txt"
MANIFEST_PATH = "/dist/worker.json"
# A wheel file name of this project (PEP 427): vectis-<version>-py3-none-any.whl.
WHEEL_NAME = re.compile(r"vectis-(?P<version>[0-9A-Za-z.!+_]+)-py3-none-any\.whl")
RETRY_AFTER = 30  # seconds before a failed build is tried again
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp")


def wheel_name(version: str = __version__) -> str:
    return f"{DIST_NAME}-{version.replace('-', '_')}-{TAG}.whl"


def check_wheel_file(raw: str, version: str = __version__) -> Path:
    """VECTIS_WORKER_WHEEL: a readable vectis-<this version>-py3-none-any.whl, or ConfigError."""
    path = Path(raw).expanduser()
    found = WHEEL_NAME.fullmatch(path.name)
    if found is None:
        raise ConfigError(
            f"VECTIS_WORKER_WHEEL={raw!r}: must name a file vectis-<version>-{TAG}.whl"
        )
    if found["version"] != version.replace("-", "_"):
        raise ConfigError(
            f"VECTIS_WORKER_WHEEL={raw!r}: is vectis {found['version']}, but this dashboard "
            f"runs {version}: workers install the dashboard's own version"
        )
    try:
        with path.open("rb") as f, zipfile.ZipFile(f) as zf:
            zf.getinfo(f"{DIST_NAME}/__init__.py")
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a vectis wheel"
        raise ConfigError(f"VECTIS_WORKER_WHEEL={raw!r}: cannot use it ({why})") from None
    return path.resolve()


# -- the constraints ---------------------------------------------------------------------------


def _needed(marker: Marker | None, extras: frozenset[str]) -> bool:
    """Whether a requirement applies on this interpreter for one of the requested extras."""
    from packaging.markers import UndefinedComparison, UndefinedEnvironmentName

    if marker is None:
        return True
    try:
        # PEP 508: `extra` holds one name at a time; "" when no extra was asked for.
        return any(marker.evaluate({"extra": extra}) for extra in sorted(extras) or [""])
    except (UndefinedComparison, UndefinedEnvironmentName) as exc:
        # A pin too many is harmless (constraints install nothing); one too few lets a
        # worker take another version than the dashboard runs.
        log.warning("pinning despite a marker that cannot be evaluated: %s (%s)", marker, exc)
        return True


def constraints(root: str = DIST_NAME) -> str:
    """`name==version` lines for the installed dependency closure of `root` (not `root`).

    Requirements come from the installed metadata, parsed and their markers evaluated for the
    running interpreter by `packaging` (imported here: about 7 ms on top of the dashboard's
    imports, 21 ms cold, paid once per build and never by `vectis status`).
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(root), frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # wanted here but not installed: nothing to pin it to
        if name != canonicalize_name(root):
            pins[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement as exc:
                log.warning("%s: ignoring the requirement %r: %s", name, line, exc)
                continue
            if _needed(req.marker, extras):
                wanted = frozenset(canonicalize_name(e) for e in req.extras)
                todo.append((canonicalize_name(req.name), wanted))
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    return "".join(line + "\n" for line in lines)


# -- the wheel ---------------------------------------------------------------------------------


def _package_files(package_dir: Path) -> list[tuple[str, bytes]]:
    """(path in the wheel, bytes) of every file of the package that runs, sorted."""
    files: list[tuple[str, bytes]] = []
    for here, dirs, names in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in names:
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(here) / name
            rel = path.relative_to(package_dir.parent).as_posix()
            files.append((rel, path.read_bytes()))
    return sorted(files)


def _metadata_files(version: str) -> list[tuple[str, bytes]]:
    """The wheel's dist-info (but RECORD), from the installed distribution's metadata."""
    dist = metadata.distribution(DIST_NAME)
    if dist.version != version:
        raise RuntimeError(
            f"the installed metadata says vectis {dist.version} but the code is {version}: "
            "reinstall the dashboard (pip install -e . in a checkout)"
        )
    info = f"{DIST_NAME}-{version}.dist-info"
    wheel = (
        "Wheel-Version: 1.0\n"
        f"Generator: vectis-dashboard ({version})\n"
        "Root-Is-Purelib: true\n"
        f"Tag: {TAG}\n"
    )
    # An egg-info (a setuptools checkout on sys.path) holds the same text as PKG-INFO.
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if not text:
        raise RuntimeError("the installed vectis has no metadata (METADATA or PKG-INFO)")
    files = [(f"{info}/METADATA", text.encode("utf-8"))]
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        files.append((f"{info}/entry_points.txt", entry_points.encode("utf-8")))
    files.append((f"{info}/WHEEL", wheel.encode("ascii")))
    return files


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pack_wheel(files: list[tuple[str, bytes]], version: str) -> bytes:
    """A wheel of `files` with its RECORD; the same files always give the same bytes.

    Not `wheel.wheelfile.WheelFile`: its `close()` writes RECORD with a time taken from
    SOURCE_DATE_EPOCH or the clock, with no argument to fix it, so a deterministic RECORD
    would need the environment changed in a running server or an override of an internal
    call; it also wants a file name, not a buffer, and `wheel` calls itself a command-line
    tool with no stable library API. What it would save is the RECORD: three lines here.
    """
    record_path = f"{DIST_NAME}-{version}.dist-info/RECORD"
    record = io.StringIO()
    # RECORD is CSV (a path with a comma or a quote is quoted), one line per file, then itself.
    writer = csv.writer(record, lineterminator="\n")
    writer.writerows((path, _record_hash(data), len(data)) for path, data in files)
    writer.writerow((record_path, "", ""))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in [*files, (record_path, record.getvalue().encode("utf-8"))]:
            entry = zipfile.ZipInfo(path, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Build:
    """What the dashboard serves to workers."""

    version: str
    wheel: Path
    sha256: str
    constraints: bytes
    constraints_sha256: str

    @property
    def name(self) -> str:
        return self.wheel.name

    def manifest(self) -> dict[str, Any]:
        """`GET /dist/worker.json`: the version, and where and what the files are."""
        return {
            "version": self.version,
            "wheel": WHEEL_PATH.format(name=self.name),
            "sha256": self.sha256,
            "constraints": CONSTRAINTS_PATH,
            "constraints_sha256": self.constraints_sha256,
        }


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def build(cache_dir: Path, given: Path | None = None, version: str = __version__) -> Build:
    """The wheel to serve (the given one, or one packed from what runs) and the constraints."""
    pins = constraints().encode("utf-8")
    if given is not None:
        wheel = given
    else:
        files = _package_files(Path(vectis.__file__).resolve().parent)
        files += _metadata_files(version)
        content = hashlib.sha256()
        for path, data in files:
            content.update(b"%s\0%s\0" % (path.encode(), hashlib.sha256(data).digest()))
        key = f"{version}-{content.hexdigest()[:16]}"
        wheel = cache_dir / key / wheel_name(version)
        if not wheel.is_file():
            started = time.perf_counter()
            data = pack_wheel(files, version)
            wheel.parent.mkdir(parents=True, exist_ok=True)
            partial = wheel.with_name(wheel.name + ".part")
            partial.write_bytes(data)
            partial.replace(wheel)
            for old in cache_dir.iterdir():
                if old.is_dir() and old.name != key:
                    shutil.rmtree(old, ignore_errors=True)
            log.info(
                "packed the worker wheel %s (%d files, %d KiB) in %.0f ms",
                wheel.name,
                len(files),
                len(data) // 1024,
                (time.perf_counter() - started) * 1000,
            )
    return Build(version, wheel, _sha256_file(wheel), pins, hashlib.sha256(pins).hexdigest())


class WheelUnavailable(ServiceUnavailable):
    """The worker wheel is not available (yet); the answer carries Retry-After."""

    code = "wheel_unavailable"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class WorkerDist:
    """The build, made once on first use in a thread; a failure is retried after a while."""

    def __init__(
        self, cache_dir: Path, given: Path | None = None, version: str = __version__
    ) -> None:
        self.cache_dir = cache_dir
        self.given = given
        self.version = version
        self._build: Build | None = None
        self._lock = asyncio.Lock()
        self._failed_at = 0.0
        self._failure = ""

    async def get(self) -> Build:
        """The build; ServiceUnavailable (with Retry-After) while it cannot be made."""
        if self._build is not None:
            return self._build
        async with self._lock:
            if self._build is not None:
                return self._build
            wait = int(self._failed_at + RETRY_AFTER - time.monotonic())
            if self._failure and wait > 0:
                raise WheelUnavailable(self._failure, wait)
            try:
                self._build = await asyncio.to_thread(
                    build, self.cache_dir, self.given, self.version
                )
            except (OSError, RuntimeError, metadata.PackageNotFoundError) as exc:
                self._failed_at = time.monotonic()
                self._failure = f"the worker wheel cannot be made: {exc}"
                log.error("%s", self._failure)
                raise WheelUnavailable(self._failure, RETRY_AFTER) from None
            return self._build


# -- the script as served ----------------------------------------------------------------------

_ORIGIN = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def served_script(script: bytes, build: Build, origin: str) -> bytes:
    """install.sh with the served build filled in (its placeholders are empty in a checkout)."""
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(f"not a plain origin: {origin[:80]!r}")
    values = {
        "SERVED_FROM": origin,
        "SERVED_VERSION": build.version,
        "SERVED_WHEEL": WHEEL_PATH.format(name=build.name),
        "SERVED_WHEEL_SHA256": build.sha256,
        "SERVED_CONSTRAINTS": CONSTRAINTS_PATH,
        "SERVED_CONSTRAINTS_SHA256": build.constraints_sha256,
    }
    for key, value in values.items():
        empty = b'\n%s=""\n' % key.encode()
        if script.count(empty) != 1:
            raise RuntimeError(f'install.sh has no single {key}="" line to fill in')
        script = script.replace(empty, b'\n%s="%s"\n' % (key.encode(), value.encode()))
    return script
