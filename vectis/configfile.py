"""`worker.conf` on disk: locate, lock, read, write atomically (docs/protocol.md#files-on-a-worker).

Every write is a read-modify-write under `flock` on `worker.conf.lock`, then temp file,
fsync, rename: readers never see a half-written file and two writers never lose each
other's changes.
"""

from __future__ import annotations

import fcntl
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from vectis.atomicfile import write_atomic
from vectis.config import WorkerConf, parse_worker_conf, render_worker_conf
from vectis.envsettings import env_text
from vectis.errors import ConfigError

DEFAULT_CONFIG_DIR = "/etc/vectis"
CONF_NAME = "worker.conf"
SECRET_NAME = "worker.secret"  # noqa: S105 (a file name)
TLS_NAME = "worker.tls.pem"  # the TLS key and its self-signed certificate (worker/tls.py)


def config_dir() -> Path:
    """`VECTIS_CONFIG_DIR`, else `/etc/vectis`."""
    return Path(env_text(os.environ, "VECTIS_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def conf_path() -> Path:
    return config_dir() / CONF_NAME


def secret_path() -> Path:
    return config_dir() / SECRET_NAME


def tls_file() -> Path:
    """`worker.tls.pem`: present, the daemon serves TLS; absent, plain HTTP."""
    return config_dir() / TLS_NAME


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file is an empty document."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def read_conf(path: Path | None = None) -> WorkerConf:
    """Read and validate `worker.conf` (defaults when it does not exist)."""
    path = path or conf_path()
    return parse_worker_conf(load_toml(path), str(path))


def _remove_stale_temps(path: Path) -> None:
    """Drop temp files left by writers killed mid-write (safe: every writer holds the lock)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


@contextmanager
def locked_conf(path: Path | None = None) -> Iterator[WorkerConf]:
    """Read `worker.conf` under the exclusive lock; write it back if the block succeeds."""
    path = path or conf_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot lock ({exc.strerror})") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        _remove_stale_temps(path)
        conf = read_conf(path)
        yield conf
        try:
            write_atomic(path, tomli_w.dumps(render_worker_conf(conf)).encode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write ({exc.strerror})") from None
    finally:
        os.close(lock_fd)  # closing the descriptor releases the lock
