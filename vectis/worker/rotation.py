"""Secret rotation on the worker: a pending new secret, the dashboard's switch, then ours.

The order makes every crash point safe. The new secret is written to `worker.secret.next`
(0600, the secret's owner) before anyone hears of it; the dashboard switches when it answers,
signed with the new secret; renaming `worker.secret.next` over `worker.secret` then ends the
rotation in one atomic step. While the pending file exists the daemon accepts either key, and
a refused heartbeat is retried with the pending one, so a rotation cut off after the
dashboard's switch completes by itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vectis.atomicfile import FileWatch, fsync_dir, write_atomic
from vectis.crypto.secrets import generate_secret, key_from_secret, read_secret_file
from vectis.errors import ConfigError, ExitCode, Unauthorized, VectisError
from vectis.worker import client

log = logging.getLogger("vectis.worker")

PENDING_SUFFIX = ".next"
LOCK_SUFFIX = ".lock"


class RotationRefused(client.DashboardRefused):
    """The dashboard answered with a refusal (4xx): it did not switch."""

    code = "rotation_refused"


def pending_path(secret_file: Path) -> Path:
    """`worker.secret.next`: the new secret while a rotation is under way."""
    return secret_file.with_name(secret_file.name + PENDING_SUFFIX)


def _like_secret(fd: int, secret_file: Path) -> None:
    """Give a new file the secret's owner, so a daemon running as another user can read it."""
    st = secret_file.stat()
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        os.fchown(fd, st.st_uid, st.st_gid)


@contextmanager
def rotation_lock(secret_file: Path) -> Iterator[None]:
    """One rotation at a time, and no heartbeat finishing one while another runs."""
    lock_file = secret_file.with_name(secret_file.name + LOCK_SUFFIX)
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{lock_file}: cannot lock ({exc.strerror})") from None
    try:
        _like_secret(fd, secret_file)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_pending(secret_file: Path) -> str | None:
    """The pending new secret, or None when no rotation is under way."""
    path = pending_path(secret_file)
    if not path.exists():
        return None
    return read_secret_file(path)


# A secret's rotation and a TLS key's (key_rotation.py) keep the new one in a pending file
# beside the one in force, and move it there in one rename.


def write_pending_file(pending: Path, data: bytes, owner_of: Path, what: str) -> None:
    """Write a pending file atomically (temp file, 0600, fsync, rename, fsync the dir), owned
    as `owner_of` is."""
    try:
        write_atomic(pending, data, 0o600, owner_of=owner_of)
    except OSError as exc:
        raise ConfigError(f"{pending}: cannot write {what} ({exc.strerror})") from None


def promote(pending: Path, target: Path, what: str) -> None:
    """Make the pending file `target`: one rename, so there is never a moment without one."""
    try:
        os.replace(pending, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot replace {what} ({exc.strerror})") from None


def drop_pending(pending: Path) -> None:
    """Drop a pending file the dashboard never accepted."""
    pending.unlink(missing_ok=True)
    fsync_dir(pending.parent)


def write_pending(secret_file: Path, secret: str) -> None:
    """Write `worker.secret.next` atomically."""
    data = (secret + "\n").encode("ascii")
    write_pending_file(pending_path(secret_file), data, secret_file, "the new secret")


def finish(secret_file: Path) -> None:
    """Make the pending secret the secret."""
    promote(pending_path(secret_file), secret_file, "the secret")


def discard(secret_file: Path) -> None:
    """Drop a pending secret the dashboard never accepted."""
    drop_pending(pending_path(secret_file))


class Outcome:
    """What a rotation's result shares: its error, if any, gives the exit code."""

    error: VectisError | None

    @property
    def exit_code(self) -> ExitCode:
        return self.error.exit_code if self.error is not None else ExitCode.OK


def _rotation_refusal(status: int, raw: bytes) -> VectisError:
    if status == 401:
        return Unauthorized("the dashboard refused the signed rotation request (401)")
    if 400 <= status < 500:
        return RotationRefused(
            f"the dashboard refused the new secret ({status}){client.message(raw)}"
        )
    return client.DashboardRefused(
        f"the dashboard answered the rotation with {status}{client.message(raw)}"
    )


def request_rotation(
    dashboard_url: str,
    worker_id: str,
    key: bytes,
    new_secret: str,
    timeout: float = client.DEFAULT_TIMEOUT,
) -> bool:
    """POST the new secret signed with `key`; whether the dashboard changed anything.

    Success needs a 200 answer signed with the new secret: only then is the switch known.
    """
    route = f"/infra/workers/{worker_id}/rotate-secret"
    body = json.dumps({"new_secret": new_secret}).encode("ascii")
    raw = client.signed_post(
        dashboard_url,
        worker_id,
        route,
        body,
        key,
        refusal=_rotation_refusal,
        answer_key=key_from_secret(new_secret),
        timeout=timeout,
    )
    return bool(client.json_object(raw, "the rotation").get("changed", True))


@dataclass(frozen=True)
class RotationResult(Outcome):
    """The outcome of `vectis rotate-secret`; never holds a secret."""

    id: str
    rotated: bool
    resumed: bool  # an earlier, interrupted rotation's secret was the one sent
    pending: bool  # a new secret is still waiting in worker.secret.next
    error: VectisError | None = None

    @property
    def message(self) -> str:
        if self.error is None:
            finished = " (finished an interrupted rotation)" if self.resumed else ""
            return f"rotated the secret of {self.id}{finished}; the old secret no longer works"
        if self.pending:
            return (
                f"secret not rotated: {self.error.message}. The old secret stays in force here; "
                "if the dashboard switched, the next heartbeat finishes the rotation (or run "
                "'vectis rotate-secret' again)"
            )
        return (
            f"secret not rotated: {self.error.message}. The old secret stays in force on the "
            "worker and the dashboard"
        )

    def as_json(self) -> dict[str, Any]:
        """The documented `--json` document of `vectis rotate-secret`."""
        return {
            "action": "rotate-secret",
            "id": self.id,
            "rotated": self.rotated,
            "resumed": self.resumed,
            "pending": self.pending,
            "message": self.message,
        }


def rotate(
    dashboard_url: str,
    worker_id: str,
    secret_file: Path,
    *,
    timeout: float = client.DEFAULT_TIMEOUT,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> RotationResult:
    """Rotate the secret with the dashboard; resume a pending rotation if one was cut off."""
    with rotation_lock(secret_file):
        current = read_secret_file(secret_file)
        pending = read_pending(secret_file)
        resumed = pending is not None
        if pending is None or pending == current:
            pending = generate_secret(random_bytes)
            write_pending(secret_file, pending)
            resumed = False
        new = pending

        def ask(signed_with: str) -> None:
            request_rotation(dashboard_url, worker_id, key_from_secret(signed_with), new, timeout)

        try:
            try:
                ask(current)
            except Unauthorized:
                if not resumed:
                    raise
                # Cut off after the dashboard switched: it knows only the pending secret now.
                ask(new)
        except VectisError as exc:
            # Only a refusal proves the dashboard did not switch; after a timeout it may have.
            refused = isinstance(exc, Unauthorized | RotationRefused)
            keep = resumed or not refused
            if not keep:
                discard(secret_file)
            return RotationResult(worker_id, False, resumed, keep, exc)
        finish(secret_file)
    log.info("worker %s: secret rotated", worker_id)
    return RotationResult(worker_id, True, resumed, False)


def heartbeat_after_refusal(
    dashboard_url: str,
    worker_id: str,
    refused_key: bytes,
    payload: dict[str, Any],
    secret_file: Path,
) -> client.HeartbeatAnswer | None:
    """After a 401, retry with a newer key if a rotation moved on; None when none did.

    A heartbeat that the dashboard answers signed with the pending secret proves it switched,
    so the rotation is finished here.
    """
    current = key_from_secret(read_secret_file(secret_file))
    if current != refused_key:  # a rotation finished while the heartbeat was on its way
        return client.heartbeat(dashboard_url, worker_id, current, payload)
    if not pending_path(secret_file).exists():
        return None
    with rotation_lock(secret_file):
        current = key_from_secret(read_secret_file(secret_file))
        if current != refused_key:
            return client.heartbeat(dashboard_url, worker_id, current, payload)
        pending = read_pending(secret_file)
        if pending is None:
            return None
        answer = client.heartbeat(dashboard_url, worker_id, key_from_secret(pending), payload)
        finish(secret_file)
    log.info("worker %s: finished the pending secret rotation", worker_id)
    return answer


class SecretFiles:
    """The daemon's keys: `worker.secret`'s, and `worker.secret.next`'s while one is pending.

    `refresh()` costs two `stat()` calls; a file is read again only when it changed, and an
    unreadable one leaves the last good key in place.
    """

    def __init__(self, secret_file: Path, key: bytes) -> None:
        self.path = secret_file
        self.pending_path = pending_path(secret_file)
        self.current = key
        self.pending: bytes | None = None
        self._secret = FileWatch(self.path)
        self._next = FileWatch(self.pending_path)
        self._next.seen = None  # read a pending file present at start in refresh() below
        self.refresh()

    def refresh(self) -> bool:
        """Re-read what changed on disk; whether the current key changed."""
        changed = False
        sig = self._secret.stamp()
        if sig != self._secret.seen:
            self._secret.seen = sig
            if sig is not None:
                try:
                    key = key_from_secret(read_secret_file(self.path))
                except VectisError as exc:
                    log.error("keeping the last good secret: %s", exc.message)
                else:
                    changed = key != self.current
                    self.current = key
                    if changed:
                        log.info("the worker secret changed; using the new one")
        sig = self._next.stamp()
        if sig != self._next.seen:
            self._next.seen = sig
            self.pending = None
            if sig is not None:
                try:
                    self.pending = key_from_secret(read_secret_file(self.pending_path))
                except VectisError as exc:
                    log.error("ignoring the pending secret: %s", exc.message)
        if self.pending == self.current:
            self.pending = None
        return changed
