"""Applying a pushed config: write it where a service reads it, then run the operator's command.

README: applying a pushed config; the wire: docs/protocol.md#sync and #heartbeat.

A revision counts as applied only when `apply_file` is written and `apply_command` exits 0.
When the command fails, `apply_file` gets its previous content back (or is removed, when there
was none), so that the file and worker.conf's applied revision always tell the same story, and
the cause is kept: `exit N: <last lines of stderr>`, `timed out after Ns`, `killed by signal N`
or `cannot write <file>: ...`, at most `contract.APPLY_ERROR_MAX` characters, readable text.

One apply runs at a time, in a thread of its own, so that `/sync` never waits for a slow
command; a newer revision offered meanwhile waits its turn (only the newest one waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from vectis.atomicfile import write_atomic
from vectis.configfile import locked_conf
from vectis.contract import APPLY_ERROR_MAX
from vectis.status import iso
from vectis.untrusted import shown
from vectis.worker.host import ApplySettings

log = logging.getLogger("vectis.worker.apply")

#: The shell that runs `apply_command`.
SHELL = "/bin/sh"
#: How much of the end of the command's stderr is read for the cause.
STDERR_TAIL = 4096
#: A failed revision is tried again by the next sync or heartbeat that carries it, but not
#: sooner than this many seconds after the failed attempt ended: a burst of syncs is one retry.
RETRY_PAUSE = 2.0
#: Variables of the daemon's environment that the command never sees.
WITHHELD = ("VECTIS_TOKEN",)

T = TypeVar("T")


def config_bytes(config: dict[str, Any]) -> bytes:
    """The config as the file holds it and the command reads it on stdin: JSON, indented."""
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def bounded(head: str, detail: str = "") -> str:
    """`head: detail`, readable and at most APPLY_ERROR_MAX characters; the detail's end is
    kept (the last lines of stderr say what went wrong)."""
    head = shown(head, APPLY_ERROR_MAX // 2)
    room = APPLY_ERROR_MAX - len(head) - 2
    detail = shown(detail, len(detail) * 12 + 12)  # escaped, not cut: the end is kept below
    if not detail:
        return head
    if len(detail) > room:
        detail = "..." + detail[len(detail) - room + 3 :]
    return f"{head}: {detail}"


def stderr_tail(data: bytes) -> str:
    """The last lines of a command's stderr, blank lines dropped, joined with ' | '."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    return " | ".join(line for line in lines if line)


def _tail_of(err: IO[bytes]) -> str:
    err.seek(0, os.SEEK_END)
    size = err.tell()
    err.seek(max(0, size - STDERR_TAIL))
    data = err.read()
    if size > STDERR_TAIL:
        data = data.split(b"\n", 1)[-1]  # a cut first line says nothing
    return stderr_tail(data)


def command_env(
    base: Mapping[str, str], revision: int, worker_id: str, settings: ApplySettings
) -> dict[str, str]:
    """The command's environment: the daemon's (without the enrollment token) and the facts."""
    env = {k: v for k, v in base.items() if k not in WITHHELD}
    env["VECTIS_REVISION"] = str(revision)
    env["VECTIS_WORKER_ID"] = worker_id
    if settings.file is not None:
        env["VECTIS_APPLY_FILE"] = settings.file
    else:
        env.pop("VECTIS_APPLY_FILE", None)
    return env


class CommandRun:
    """One run of `apply_command` in a session (process group) of its own, killable whole."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def run(self, command: str, stdin: bytes, timeout: float, env: Mapping[str, str]) -> str | None:
        """Run it to the end or the timeout; None when it exited 0, else the cause."""
        # Files, not pipes: a process the command leaves running in the background (a daemon
        # it starts) may keep stdout or stderr open forever; only the command's exit counts.
        with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as err:
            given.write(stdin)
            given.seek(0)
            with self._lock:
                if self._stopped:
                    return "not run: the daemon is stopping"
                try:
                    # The operator's own command line, from worker.conf or the environment.
                    self._proc = subprocess.Popen(
                        [SHELL, "-c", command],
                        stdin=given,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        env=dict(env),
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError as exc:
                    return bounded(f"cannot run {SHELL}", exc.strerror or type(exc).__name__)
            proc = self._proc
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
                proc.wait()
                return bounded(f"timed out after {timeout:g}s", _tail_of(err))
            if self._stopped and code != 0:
                return "stopped: the daemon is stopping"
            if code == 0:
                return None
            if code < 0:
                name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
                return bounded(f"killed by signal {-code} ({name})", _tail_of(err))
            return bounded(f"exit {code}", _tail_of(err))

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        # The session's id is the shell's pid: every process the command started goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Kill the running command's process group (at shutdown); no new one starts."""
        with self._lock:
            self._stopped = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            self._kill_group(proc)


@dataclass(frozen=True, slots=True)
class _Previous:
    """What `apply_file` held before a write: its bytes (None: absent) and mode."""

    data: bytes | None
    mode: int

    @classmethod
    def of(cls, path: Path) -> _Previous:
        try:
            with path.open("rb") as f:
                return cls(f.read(), os.fstat(f.fileno()).st_mode & 0o7777)
        except FileNotFoundError:
            return cls(None, 0o600)

    def put_back(self, path: Path) -> None:
        if self.data is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, self.data, self.mode)


def apply_config(
    settings: ApplySettings,
    revision: int,
    config: dict[str, Any],
    worker_id: str,
    *,
    env: Mapping[str, str],
    run: CommandRun | None = None,
) -> str | None:
    """Write the file and run the command (blocking); None when applied, else the cause."""
    data = config_bytes(config)
    previous: _Previous | None = None
    path = Path(settings.file) if settings.file is not None else None
    if path is not None:
        try:
            previous = _Previous.of(path)
            # A new file is 0600 (a config may hold secrets); an existing one keeps its mode.
            write_atomic(path, data, previous.mode)
        except OSError as exc:
            return bounded(f"cannot write {path}", exc.strerror or type(exc).__name__)
    if settings.command is None:
        return None
    cause = (run or CommandRun()).run(
        settings.command, data, settings.timeout, command_env(env, revision, worker_id, settings)
    )
    if cause is not None and path is not None and previous is not None:
        try:
            previous.put_back(path)
        except OSError as exc:
            log.error("cannot put the previous %s back: %s", path, exc.strerror)
            cause = bounded(f"{cause}; the previous {path} could not be put back")
    return cause


# -- the daemon's side: one apply at a time, recorded in worker.conf ------------------------------


def _record_start(conf_path: Path, worker_id: str, revision: int, config: dict[str, Any]) -> bool:
    """Note the revision as pending; False when it no longer needs applying."""
    with locked_conf(conf_path) as conf:
        if conf.state.id != worker_id or conf.state.applied_revision >= revision:
            return False
        if conf.state.pending_revision != revision or conf.pending_config != config:
            conf.state.pending_revision = revision
            conf.pending_config = config
        return True


def _record_end(
    conf_path: Path,
    worker_id: str,
    revision: int,
    config: dict[str, Any],
    cause: str | None,
    now: datetime,
) -> None:
    with locked_conf(conf_path) as conf:
        st = conf.state
        if st.id != worker_id:
            return  # registered anew meanwhile: this config belonged to the old identity
        if cause is not None:
            st.apply_error, st.apply_error_at = cause, iso(now)
            return
        if revision > st.applied_revision:
            conf.config, st.applied_revision = config, revision
        if st.pending_revision is not None and st.pending_revision <= revision:
            st.pending_revision, conf.pending_config = None, None
        st.apply_error, st.apply_error_at = None, None


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a daemon thread: a shutdown never waits for it (its command is killed)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="vectis-apply", daemon=True).start()
    return await future


@dataclass(frozen=True, slots=True)
class _Job:
    revision: int
    config: dict[str, Any]
    worker_id: str


class Applier:
    """The daemon's applies: one at a time, the newest revision offered meanwhile next.

    `done` runs after each attempt is recorded in worker.conf (the runtime reads it again and
    the heartbeat reports the outcome at once).
    """

    def __init__(
        self,
        settings: ApplySettings,
        conf_path: Path,
        *,
        done: Callable[[], Awaitable[None]],
        env: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.conf_path = conf_path
        self._done = done
        self._env = dict(os.environ if env is None else env)
        self._monotonic = monotonic
        self._clock = clock
        self.running: int | None = None
        self._next: _Job | None = None
        self._failed: tuple[int, float] | None = None  # revision, when its attempt ended
        self._task: asyncio.Task[None] | None = None
        self._run: CommandRun | None = None
        self._changed = asyncio.Event()

    @property
    def applying(self) -> int | None:
        """The newest revision being applied or waiting to be; None when idle."""
        return self._next.revision if self._next is not None else self.running

    def wants(self, revision: int) -> bool:
        """Whether offering `revision` would start or queue an attempt."""
        if revision == self.running or (self._next is not None and self._next.revision == revision):
            return False
        failed = self._failed
        return not (
            failed is not None
            and failed[0] == revision
            and self._monotonic() - failed[1] < RETRY_PAUSE
        )

    def offer(self, revision: int, config: dict[str, Any], worker_id: str) -> None:
        """Apply `revision` after the attempt running now, if any (a newer one replaces it)."""
        if not self.wants(revision):
            return
        newest = max(self.running or 0, self._next.revision if self._next is not None else 0)
        if newest > revision:
            return
        self._next = _Job(revision, config, worker_id)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._work(), name="vectis-apply")

    async def settle(self, revision: int, wait: float) -> None:
        """Wait up to `wait` seconds for the attempt at `revision` to end."""
        deadline = asyncio.get_running_loop().time() + wait
        while revision in (self.running, self.applying):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    async def _work(self) -> None:
        while self._next is not None:
            job, self._next = self._next, None
            self.running = job.revision
            try:
                try:
                    await self._attempt(job)
                except Exception as exc:  # a bug must not end the applies for good
                    log.error("applying config revision %d failed: %s", job.revision, type(exc))
                # The runtime reads the outcome before a sync waiting in `settle` answers
                # with it: woken earlier, that answer would carry the worker.conf of before.
                await self._done()
            finally:
                self.running = None
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()

    async def _attempt(self, job: _Job) -> None:
        path = self.conf_path
        if not await asyncio.to_thread(
            _record_start, path, job.worker_id, job.revision, job.config
        ):
            return
        run = self._run = CommandRun()
        started = self._monotonic()
        cause = await _in_thread(
            lambda: apply_config(
                self.settings, job.revision, job.config, job.worker_id, env=self._env, run=run
            )
        )
        self._run = None
        seconds = self._monotonic() - started
        self._failed = None if cause is None else (job.revision, self._monotonic())
        now = datetime.fromtimestamp(self._clock(), UTC)
        await asyncio.to_thread(
            _record_end, path, job.worker_id, job.revision, job.config, cause, now
        )
        if cause is None:
            log.info("applied config revision %d (%.2f s)", job.revision, seconds)
        else:
            log.warning("config revision %d not applied: %s", job.revision, cause)

    async def close(self) -> None:
        """Stop: kill a running command's process group; its revision stays unapplied."""
        self._next = None
        if self._run is not None:
            self._run.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
