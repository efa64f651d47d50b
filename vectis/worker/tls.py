"""The worker's TLS key: made once by `vectis worker init`, served by the daemon, pinned.

One PEM file beside the secret, `worker.tls.pem` (0600), holds the private key and its
self-signed certificate; the dashboard never checks a name, a date or a CA, only that the
key is the one pinned (docs/protocol.md#tls). A worker without the file serves plain HTTP.

`cryptography` is imported only to make a key (`vectis worker init`, a key rotation): about
50 ms, which `vectis status`, `vectis sync` and the daemon never pay. Reading the pin is a
DER walk (vectis.crypto.pinning); serving uses the standard library's `ssl`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from vectis.atomicfile import FileWatch, create_exclusive
from vectis.configfile import TLS_NAME
from vectis.crypto.pinning import BadCertificate, pin_of_pem
from vectis.errors import ConfigError

log = logging.getLogger("vectis.worker")

NEXT_SUFFIX = ".next"
#: RFC 5280 4.1.2.5: "no well-defined expiration date". Nothing checks the date: the key is
#: pinned, so a certificate that expired would only make tools other than Vectis complain.
_NOT_AFTER = (9999, 12, 31, 23, 59, 59)


def tls_path(secret_file: Path) -> Path:
    """`worker.tls.pem`, beside the secret."""
    return secret_file.with_name(TLS_NAME)


def next_path(tls_file: Path) -> Path:
    """`worker.tls.pem.next`: the new key while a key rotation is pending."""
    return tls_file.with_name(tls_file.name + NEXT_SUFFIX)


def make_pem(common_name: str = "vectis worker") -> bytes:
    """A new Ed25519 private key and a self-signed certificate for it, as one PEM.

    Ed25519 rather than ECDSA P-256: the dashboard verifies one signature and parses the
    certificate on every full handshake, and copies it with each TLS session it keeps or
    resumes; with OpenSSL 3.0 that costs it 0.365 ms of CPU a full handshake and 0.220 ms a
    resumed one against 0.412 and 0.260 ms with P-256 (memory BIOs, the worker's side alike).
    Keys made before stay as they are: the pin names any key.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(datetime.datetime(*_NOT_AFTER, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, None)  # Ed25519 hashes itself
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def create_tls_file(path: Path) -> bool:
    """Create `worker.tls.pem` (0600) unless it exists; whether this call created it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return False
    return create_exclusive(path, make_pem())


def read_pin(path: Path) -> str | None:
    """The pin of the key in `path`; None when there is no such file (a plain-HTTP worker)."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the TLS key ({exc.strerror})") from None
    try:
        return pin_of_pem(pem)
    except BadCertificate as exc:
        raise ConfigError(f"{path}: no usable certificate ({exc})") from None


def server_context(path: Path) -> ssl.SSLContext:
    """The daemon's TLS context: the key and certificate in `path`, TLS 1.2 at least."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The dashboard keeps one session per worker: one ticket, not OpenSSL's two, saves each
    # full handshake about 0.04 ms on either side (measured with memory BIOs, OpenSSL 3.0).
    ctx.num_tickets = 1
    load(ctx, path)
    return ctx


def load(ctx: ssl.SSLContext, path: Path) -> None:
    """Serve the key in `path` from now on: connections made later use it."""
    try:
        ctx.load_cert_chain(path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{path}: cannot load the TLS key and certificate ({exc})") from None


#: How often the daemon looks for a new key (a rotation): one stat() a second.
WATCH_INTERVAL = 1.0


class ServedKey:
    """The daemon's TLS context, loaded again when `worker.tls.pem` changes (a rotation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = FileWatch(path)
        self.context = server_context(path)
        self.pin = read_pin(path)

    def refresh(self) -> bool:
        """Load the file again if it changed; whether a new key is now served."""
        sig = self._file.stamp()
        if sig == self._file.seen or sig is None:
            return False
        self._file.seen = sig
        try:
            pin = read_pin(self.path)
            load(self.context, self.path)
        except ConfigError as exc:
            log.error("keeping the TLS key served so far: %s", exc.message)
            return False
        changed, self.pin = pin != self.pin, pin
        if changed:
            log.info("serving the new TLS key (pin %s)", pin)
        return changed

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """`refresh()` every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.refresh()


def served_key(secret_file: Path) -> ServedKey | None:
    """What `vectis worker serve` serves: the key beside the secret; None (plain HTTP) if none."""
    path = tls_path(secret_file)
    return ServedKey(path) if path.exists() else None


def reported_pins(path: Path) -> dict[str, str]:
    """What a heartbeat reports: `tls_pin`, and `tls_pin_next` while a rotation is pending."""
    pins: dict[str, str] = {}
    pin = read_pin(path)
    if pin is not None:
        pins["tls_pin"] = pin
        upcoming = read_pin(next_path(path))
        if upcoming is not None and upcoming != pin:
            pins["tls_pin_next"] = upcoming
    return pins
