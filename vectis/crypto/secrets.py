"""The worker's secret: generation, format and file permission checks."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from vectis.atomicfile import create_exclusive
from vectis.contract import SECRET_HEX_MAX, SECRET_HEX_MIN
from vectis.errors import ConfigError

SECRET_BYTES = 32
_WORKER_SECRET = re.compile(r"[0-9a-f]{64}")
# What the dashboard accepts at registration (docs/protocol.md#registration): hex characters
# in contract's range, and an even count, since the signing key is bytes.fromhex(secret).
_ACCEPTED_SECRET = re.compile(rf"[0-9a-fA-F]{{{SECRET_HEX_MIN},{SECRET_HEX_MAX}}}")


def generate_secret(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """32 random bytes as 64 lowercase hex characters."""
    return random_bytes(SECRET_BYTES).hex()


def degenerate(key: bytes) -> str | None:
    """Why a key is too regular to be random (all one byte, a short repeated pattern), or None.

    The rule: at least half of its bytes are distinct values. 16 random bytes break it with a
    probability under 1e-12, 32 random bytes under 1e-16; all zeros and `abab...` never pass.
    """
    distinct = len(set(key))
    if distinct * 2 < len(key):
        return (
            f"only {distinct} distinct byte values in {len(key)} bytes: "
            "at least half of its bytes must differ, as in a random secret"
        )
    return None


def secret_problem(text: object) -> str | None:
    """What is wrong with a worker secret sent to the dashboard, or None.

    The rule: docs/protocol.md#registration.
    """
    if not (isinstance(text, str) and _ACCEPTED_SECRET.fullmatch(text) and len(text) % 2 == 0):
        return f"must be {SECRET_HEX_MIN} to {SECRET_HEX_MAX} hexadecimal characters, an even count"
    return degenerate(bytes.fromhex(text))


def is_acceptable_secret(text: object) -> bool:
    """Whether a registering worker's secret is even-length hex and not degenerate."""
    return secret_problem(text) is None


def key_from_secret(secret: str) -> bytes:
    """The HMAC key: `bytes.fromhex(secret)`."""
    return bytes.fromhex(secret)


def read_secret_file(path: Path) -> str:
    """Read a worker secret, refusing a file that group or others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no worker secret; create one with 'vectis worker init'"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the worker secret ({exc.strerror})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others read the "
            f"secret; run 'chmod 600 {path}'"
        )
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the worker secret ({exc})") from None
    if not _WORKER_SECRET.fullmatch(text):
        raise ConfigError(f"{path}: the secret must be one line of 64 lowercase hex characters")
    weak = degenerate(bytes.fromhex(text))
    if weak:
        raise ConfigError(
            f"{path}: not a random secret ({weak}); "
            "remove it, run 'vectis worker init' and register again"
        )
    return text


def create_secret_file(path: Path, random_bytes: Callable[[int], bytes] = os.urandom) -> bool:
    """Create the secret file (0600) unless it exists; return whether it was created.

    The secret is written to a temporary file first and linked into place, so a crash never
    leaves a short secret behind and a racing second call never replaces the first one's.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return False
    return create_exclusive(path, (generate_secret(random_bytes) + "\n").encode("ascii"))
