"""TLS to the dashboard: its own certificate (`--tls-cert/--tls-key`) and how clients check it.

Clients (a worker's registration and heartbeats, the admin CLI) verify an `https://` dashboard
against the system's CA store, name included, like any HTTPS client; `VECTIS_DASHBOARD_CA`
names a PEM file of CA certificates to trust instead (a private CA, or the dashboard's own
self-signed certificate), the name still checked (docs/protocol.md#the-dashboards-https).

Standard library only, imported by the commands that call the dashboard, never by
`vectis status`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from vectis.envsettings import env_text
from vectis.errors import ConfigError

CA_VARIABLE = "VECTIS_DASHBOARD_CA"


@lru_cache(maxsize=4)
def _client_context(cafile: str | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"{CA_VARIABLE}: cannot read CA certificates from {cafile} ({why})"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(env: Mapping[str, str]) -> ssl.SSLContext:
    """The context that checks an `https://` dashboard: the system CAs, or VECTIS_DASHBOARD_CA's."""
    return _client_context(env_text(env, CA_VARIABLE))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The dashboard's own TLS context; ConfigError (exit 3) when a file is unusable.

    The message names the file and the reason, never the key's content.
    """
    for path, what in ((cert, "--tls-cert"), (key, "--tls-key")):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = exc.reason or "not a PEM certificate and its private key"
        if "KEY_VALUES_MISMATCH" in str(exc):
            why = "the key does not belong to the certificate"
        raise ConfigError(
            f"--tls-cert {cert} / --tls-key {key}: cannot serve them ({why.lower()})"
        ) from None
    return ctx
