"""One parser for every setting read from the environment or a flag, on both sides.

Each helper reads one `VECTIS_*` variable (an empty variable means unset) or checks one flag's
value, and a bad value is always a `ConfigError` (exit 3) whose one-line message names the
variable or flag and the allowed range. The limits both sides share are defined here once.
Standard library only: `vectis status` imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import overload

from vectis.errors import ConfigError

#: A port a worker listens on or reports (flag, variable, worker.conf).
PORT_RANGE = (1, 65535)
#: The dashboard may listen on port 0: the system picks a free one (tests, demo).
LISTEN_PORT_RANGE = (0, 65535)
#: Nonces kept against replays (VECTIS_NONCE_CAPACITY), on the worker and the dashboard:
#: about 100 bytes each, so the top is some 10 GB of memory, well past any real fleet.
NONCE_CAPACITY_RANGE = (1, 100_000_000)
#: The top of every duration or rate that has no tighter one of its own (about 31 years).
FOREVER = 1e9

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _show(value: float) -> str:
    """A limit as a person writes it: 65535, 0.05, 1000000000 (never 1e+09)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def env_text(env: Mapping[str, str], name: str) -> str | None:
    """The variable's text without surrounding blanks; None when unset or empty."""
    return env.get(name, "").strip() or None


def check_int(value: int, what: str, low: int, high: int) -> int:
    """`value` itself if `low <= value <= high`; else a ConfigError naming `what`."""
    if not low <= value <= high:
        raise ConfigError(f"{what}: must be an integer from {low} to {high}, not {value}")
    return value


def _parse_int(raw: str, what: str, low: int, high: int) -> int:
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isdecimal() and digits.isascii() and len(digits) <= 20) or not (
        low <= int(text) <= high
    ):
        raise ConfigError(f"{what}: must be an integer from {low} to {high}, not {raw!r}")
    return int(text)


@overload
def env_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int: ...
@overload
def env_int(
    env: Mapping[str, str], name: str, default: None, low: int, high: int
) -> int | None: ...
def env_int(
    env: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int | None:
    """An integer variable from `low` to `high`, or `default` when unset."""
    raw = env_text(env, name)
    return default if raw is None else _parse_int(raw, name, low, high)


def check_float(value: float, what: str, low: float, high: float = FOREVER) -> float:
    """`value` itself if a finite number from `low` to `high`; else a ConfigError."""
    if math.isnan(value) or not low <= value <= high:
        raise ConfigError(
            f"{what}: must be a number from {_show(low)} to {_show(high)}, not {value:g}"
        )
    return value


@overload
def env_float(
    env: Mapping[str, str], name: str, default: float, low: float, high: float = FOREVER
) -> float: ...
@overload
def env_float(
    env: Mapping[str, str], name: str, default: None, low: float, high: float = FOREVER
) -> float | None: ...
def env_float(
    env: Mapping[str, str], name: str, default: float | None, low: float, high: float = FOREVER
) -> float | None:
    """A number variable from `low` to `high` (NaN and infinity refused), or `default`."""
    raw = env_text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value) or not low <= value <= high:
        raise ConfigError(
            f"{name}: must be a number from {_show(low)} to {_show(high)}, not {raw!r}"
        )
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """1/true/yes/on or 0/false/no/off (any case), or `default` when unset."""
    raw = env_text(env, name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}: must be 1, true, yes, on or 0, false, no, off, not {raw!r}")


def env_csv(env: Mapping[str, str], name: str) -> list[str]:
    """A comma-separated list, blanks trimmed and empty items dropped; [] when unset."""
    return [part.strip() for part in env.get(name, "").split(",") if part.strip()]
