"""Files replaced whole or not at all, and the cheap check of whether one changed.

Every file Vectis writes on a worker (worker.conf, worker.secret, worker.secret.next) goes
through here: a temp file in the same folder (`.NAME.PID.tmp`, so a crashed writer's leftover
is recognisable), the wanted mode, the owner kept when root writes, fsync, then rename (or
link, to never replace) and an fsync of the folder so the rename itself survives a crash.
Standard library only: `vectis status` imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

#: (inode, size, mtime in ns): a rename, a rewrite or a truncation changes it.
Stamp = tuple[int, int, int]


def temp_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _owner(of: Path) -> tuple[int, int] | None:
    """The owner a new file must keep: `of`'s, when root writes a file someone else owns."""
    if os.geteuid() != 0:
        return None
    try:
        st = of.stat()
    except FileNotFoundError:
        return None
    return (st.st_uid, st.st_gid)


def _write_temp(path: Path, data: bytes, mode: int, owner_of: Path) -> Path:
    """Write `data` to this process's temp file beside `path`, synced; remove it on failure."""
    tmp = temp_path(path)
    owner = _owner(owner_of)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or the file pre-existed
        if owner is not None:
            # root running 'vectis sync' must not take the file from the service user.
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_atomic(
    path: Path, data: bytes, mode: int = 0o600, *, owner_of: Path | None = None
) -> None:
    """Replace `path` with `data`: temp file, `mode`, fsync, rename, fsync the folder.

    When root writes, the file keeps the owner of `owner_of` (default: `path` itself).
    Raises OSError; the temp file never outlives a failure.
    """
    tmp = _write_temp(path, data, mode, owner_of or path)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create `path` holding `data` unless it exists; return whether this call created it.

    The data is linked into place complete, so a crash never leaves a short file and a racing
    second call never replaces the first one's.
    """
    tmp = _write_temp(path, data, mode, path)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def stamp(path: str | Path) -> Stamp | None:
    """The file's identity, size and mtime, or None when it does not exist."""
    # access() answers "absent" (the usual case of worker.secret.next) without an exception.
    if not os.access(path, os.F_OK):
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileWatch:
    """Whether a file changed since its content was last taken in, by `stamp` (no read).

    Take `stamp()` before reading the file and store it in `seen` once the content is used:
    a change made while reading is then seen on the next look.
    """

    def __init__(self, path: str | Path) -> None:
        self._name = str(path)  # stat() of a str skips the Path conversion on every /sync
        self.seen: Stamp | None = stamp(self._name)

    def stamp(self) -> Stamp | None:
        return stamp(self._name)

    def changed(self) -> bool:
        """Whether the file now differs from what `seen` records."""
        return stamp(self._name) != self.seen
