"""A real, throwaway PostgreSQL server for tests: its own cluster in a temp dir, on a free port.

    server = PgServer.start_new()
    url = server.create_database()  # postgresql://postgres@127.0.0.1:PORT/t_1
    ...
    server.destroy()

It runs Debian's packaged binaries (/usr/lib/postgresql/<version>/bin); a machine without
them fails the tests that need it (CI installs the `postgresql` package), never skips them.
As root, the cluster belongs to the `postgres` user the package creates (PostgreSQL refuses
to run as root). fsync is off: a committed transaction survives the server's own crash or
immediate stop (it is in the kernel's cache), only a crash of the machine would lose it, and
these clusters never outlive a test session.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import free_port

_numbers = itertools.count(1)


def bin_dir() -> Path:
    """The newest installed PostgreSQL's bin dir; AssertionError when there is none."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise AssertionError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): "
            "apt-get install postgresql, or run bash .ci/run"
        )
    return found[-1].parent


class PgServer:
    """One PostgreSQL cluster in `workdir`, listening on 127.0.0.1:`port` (trust auth)."""

    def __init__(self, workdir: Path) -> None:
        self.bin = bin_dir()
        self.workdir = workdir
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.port = 0
        self._as_postgres = os.geteuid() == 0

    @classmethod
    def start_new(cls) -> PgServer:
        """initdb in a fresh temp dir, then start."""
        # Not under pytest's tmp dirs: as root those are 0700 and the postgres user must
        # reach its own data dir.
        server = cls(Path(tempfile.mkdtemp(prefix="vectis-pg-")))
        server.init()
        server.start()
        return server

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: exit {done.returncode}\n"
                                 f"{done.stdout}{done.stderr}\n{self.output}")  # fmt: skip
        return done

    def init(self) -> None:
        if self._as_postgres:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise AssertionError("no postgres user: apt-get install postgresql") from None
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8", "--locale", "C.UTF-8")  # fmt: skip

    def start(self) -> None:
        """Start (on a new free port unless one was used before) and wait until it accepts."""
        if self.port == 0:
            self.port = free_port()
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "30", "start")  # fmt: skip

    def stop(self) -> None:
        """Stop at once (connections are cut); the port stays reserved for a later `start()`."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql; its unaligned, tuples-only output."""
        done = self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                         "-d", database, "-c", sql)  # fmt: skip
        return done.stdout.strip()

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{os.getpid()}_{next(_numbers)}_{int(time.time() * 1000) % 100000}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def version(self) -> str:
        return self.psql("SHOW server_version")
