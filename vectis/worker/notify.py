"""systemd readiness (`Type=notify`): READY=1 once listening, STOPPING=1 at shutdown."""

from __future__ import annotations

import os
import socket


def notify(state: str, address: str | None = None) -> bool:
    """Send `state` to $NOTIFY_SOCKET; return whether it was sent (False when not under systemd)."""
    address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        # An abstract socket: systemd writes its leading NUL byte as '@'.
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
