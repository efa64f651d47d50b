"""TLS key rotation on the worker: announce the next key, serve it, confirm it.

The order keeps every sync working and every crash point safe (docs/protocol.md#tls-key-rotation):

1. The new key is written to `worker.tls.pem.next` (0600, the key's owner, atomically) unless
   an earlier, interrupted rotation left one there, which is then used again.
2. A signed heartbeat reports both pins; its signed answer proves that the dashboard stored
   the next one, and from then on it accepts either key.
3. `worker.tls.pem.next` is renamed over `worker.tls.pem` (one atomic step); the daemon,
   which watches the file, serves the new key within a second, and this waits until it does.
4. A signed heartbeat reports the new pin alone: the dashboard drops the old one.

Cut off after 1 or 2, the old key stays served and accepted; the daemon's heartbeats report
the pending pin too (harmless: either key is accepted) and the command run again resumes with
the same key. Cut off after 3, the dashboard already accepts the new key; the daemon's next
heartbeat, or the dashboard's next sync that meets the new key, finishes the rotation.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vectis.crypto.pinning import BadCertificate, pin_of_der
from vectis.errors import ConfigError, ExitCode, Unauthorized, VectisError
from vectis.worker import client, tls
from vectis.worker.host import probe_address
from vectis.worker.rotation import Outcome, drop_pending, promote, rotation_lock, write_pending_file

log = logging.getLogger("vectis.worker")

#: How long step 3 waits for the daemon to serve the new key: it looks once a second.
SERVE_WAIT = 10.0
_POLL = 0.1


def write_next(tls_file: Path) -> str:
    """Write a new key to `worker.tls.pem.next` (0600, atomically); its pin."""
    path = tls.next_path(tls_file)
    write_pending_file(path, tls.make_pem(), tls_file, "the new TLS key")
    pin = tls.read_pin(path)
    assert pin is not None
    return pin


def pending_pin(tls_file: Path) -> str | None:
    """The pin of the pending key; None when there is none, or it is unusable (made again)."""
    try:
        return tls.read_pin(tls.next_path(tls_file))
    except ConfigError as exc:
        log.warning("making a new TLS key: %s", exc.message)
        return None


def switch(tls_file: Path) -> None:
    """Make the pending key the served one: one rename, so a key is always there."""
    promote(tls.next_path(tls_file), tls_file, "the TLS key")


def discard(tls_file: Path) -> None:
    """Drop a pending key that the dashboard refused to hear of."""
    drop_pending(tls.next_path(tls_file))


def served_pin(host: str, port: int, timeout: float = 1.0) -> str | None:
    """The pin of the key the daemon on this machine serves; None if nothing answers TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the key is what is looked at, not who vouches for it
    try:
        with (
            socket.create_connection((probe_address(host), port), timeout=timeout) as plain,
            ctx.wrap_socket(plain) as sock,
        ):
            der = sock.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    try:
        return pin_of_der(der) if der else None
    except BadCertificate:
        return None


def wait_served(
    host: str,
    port: int,
    pin: str,
    wait: float = SERVE_WAIT,
    clock: Callable[[], float] = time.monotonic,
) -> bool | None:
    """Whether the daemon serves `pin` within `wait` seconds; None when no daemon answers."""
    deadline = clock() + wait
    answered = False
    while True:
        served = served_pin(host, port)
        if served == pin:
            return True
        answered = answered or served is not None
        if clock() >= deadline:
            return False if answered else None
        time.sleep(_POLL)


@dataclass(frozen=True)
class KeyRotationResult(Outcome):
    """The outcome of `vectis rotate-tls-key`; holds pins, which are public, never a key."""

    id: str
    rotated: bool  # the new key is served and the dashboard accepts it
    confirmed: bool  # the dashboard was told the old key is retired
    resumed: bool  # an earlier, interrupted rotation's key was the one used
    pending: bool  # a new key still waits in worker.tls.pem.next
    pin: str | None  # the pin served from now on (the new one once rotated)
    previous_pin: str | None
    error: VectisError | None = None

    @property
    def message(self) -> str:
        if self.error is None:
            finished = " (finished an interrupted rotation)" if self.resumed else ""
            return (
                f"rotated the TLS key of {self.id}{finished}: pin {self.pin}; "
                "the old key is no longer accepted"
            )
        if self.rotated:
            return (
                f"the new TLS key (pin {self.pin}) is served and accepted, but the dashboard "
                f"was not told the old one is retired: {self.error.message}. The next "
                "heartbeat or sync does it"
            )
        if self.pending:
            return (
                f"TLS key not rotated: {self.error.message}. The old key stays served; the new "
                "one waits in worker.tls.pem.next: run 'vectis rotate-tls-key' again"
            )
        return f"TLS key not rotated: {self.error.message}. The old key stays in force"

    def as_json(self) -> dict[str, Any]:
        """The documented `--json` document of `vectis rotate-tls-key`."""
        return {
            "action": "rotate-tls-key",
            "id": self.id,
            "rotated": self.rotated,
            "confirmed": self.confirmed,
            "resumed": self.resumed,
            "pending": self.pending,
            "tls_pin": self.pin,
            "previous_tls_pin": self.previous_pin,
            "message": self.message,
        }


class DaemonStale(VectisError):
    """The daemon kept serving the old key: it did not load the new file."""

    exit_code = ExitCode.FAILED
    code = "daemon_stale"


def rotate(
    worker_id: str,
    tls_file: Path,
    announce: Callable[[], VectisError | None],
    daemon: tuple[str, int],
    *,
    wait: float = SERVE_WAIT,
) -> KeyRotationResult:
    """Rotate the TLS key; `announce()` sends one signed heartbeat (its error, or None)."""
    with rotation_lock(tls_file):
        old = tls.read_pin(tls_file)
        if old is None:
            raise ConfigError(
                f"{tls_file}: no TLS key to rotate (this worker serves plain HTTP); "
                "'vectis worker init' makes one"
            )
        new = pending_pin(tls_file)
        resumed = new is not None and new != old
        if new is None or new == old:
            new = write_next(tls_file)

        def outcome(
            rotated: bool, confirmed: bool, pending: bool, error: VectisError | None
        ) -> KeyRotationResult:
            pin = new if rotated else old
            return KeyRotationResult(
                worker_id, rotated, confirmed, resumed, pending, pin, old, error
            )

        # 2. The dashboard hears of the next key, and accepts either from its answer on.
        error = announce()
        if error is not None:
            refused = isinstance(error, Unauthorized | client.UnknownWorker)
            if refused and not resumed:
                discard(tls_file)
                return outcome(False, False, False, error)
            return outcome(False, False, True, error)
        # 3. Serve it.
        switch(tls_file)
        served = wait_served(*daemon, new, wait)
        if served is False:
            # The old key may still be served: the dashboard must keep accepting it.
            stale = DaemonStale(
                f"the daemon on port {daemon[1]} still serves the old key after {wait:g} s; "
                "restart it (the dashboard accepts both keys until then)"
            )
            return outcome(True, False, False, stale)
        # 4. The old key retired.
        error = announce()
        if error is not None:
            return outcome(True, False, False, error)
    log.info("worker %s: TLS key rotated, pin %s", worker_id, new)
    return outcome(True, True, False, None)
