"""Errors that carry their HTTP status and CLI exit code.

One middleware per server turns a `VectisError` into the JSON error shape
`{"error": code, "message": text}`; one place in the CLI turns it into a one-line
message on stderr and the exit code below.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of every `vectis` command (documented in the README)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    AUTH = 4
    UNREACHABLE = 5
    PENDING = 10
    FAILED = 11
    OUTDATED = 12


class VectisError(Exception):
    """Base of every error Vectis reports to a person or a client."""

    exit_code: ExitCode = ExitCode.ERROR
    http_status: int = 500
    code: str = "internal"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        """The body of the HTTP error answer."""
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(VectisError):
    exit_code = ExitCode.USAGE
    http_status = 400
    code = "bad_request"


class Unauthorized(VectisError):
    """Every auth failure: the reason stays in the receiver's log."""

    exit_code = ExitCode.AUTH
    http_status = 401
    code = "unauthorized"

    def to_json(self) -> dict[str, Any]:
        return {"error": "unauthorized"}


class Forbidden(VectisError):
    """Authenticated, but the request lacks what it needs (e.g. the CSRF header)."""

    http_status = 403
    code = "forbidden"


class NotFound(VectisError):
    http_status = 404
    code = "not_found"


class Conflict(VectisError):
    http_status = 409
    code = "conflict"


class PayloadTooLarge(VectisError):
    http_status = 413
    code = "too_large"


class TooManyRequests(VectisError):
    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(VectisError):
    http_status = 503
    code = "unavailable"


class Unreachable(VectisError):
    """The other side could not be reached (connection refused, timeout, DNS)."""

    exit_code = ExitCode.UNREACHABLE
    http_status = 502
    code = "unreachable"


class ConfigError(VectisError):
    """A bad or unreadable local file: names the file and, where known, the key."""

    exit_code = ExitCode.CONFIG
    code = "config"
