"""The HMAC key of every registered worker, as the dashboard holds it now.

Registration adds a key, a rotation replaces it, a deletion drops it; heartbeats and syncs
sign and verify with what is here, so a record read before a rotation is never signed with
a retired secret.

The TLS pins of a worker whose pins this process changed (a key rotation's heartbeats, a
sync that met the next key) are held here too, so that a sweep's record read before the
change reaches the worker with the keys it accepts now (docs/protocol.md#tls-key-rotation).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

from vectis.crypto.secrets import key_from_secret
from vectis.dashboard.model import Worker


class KeyRing:
    """Worker id -> signing key."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._pins: dict[str, tuple[str | None, str | None]] = {}

    def get(self, worker_id: str) -> bytes | None:
        return self._keys.get(worker_id)

    def set(self, worker_id: str, secret: str) -> None:
        self._keys[worker_id] = key_from_secret(secret)

    def drop(self, worker_id: str) -> None:
        self._keys.pop(worker_id, None)
        self._pins.pop(worker_id, None)

    def set_pins(self, w: Worker) -> None:
        """`w`'s pins, just stored: records read earlier get them from `current`."""
        self._pins[w.id] = (w.tls_pin, w.tls_pin_next)

    def follow_pins(self, w: Worker) -> None:
        """`w`'s pins, just stored, if this ring holds pins for it (else records are current)."""
        if w.id in self._pins:
            self._pins[w.id] = (w.tls_pin, w.tls_pin_next)

    def load(self, secrets_by_id: Mapping[str, str]) -> None:
        self._keys.update({i: key_from_secret(s) for i, s in secrets_by_id.items()})

    def current(self, w: Worker) -> Worker:
        """`w` with the secret and pins held now: a record read earlier may predate a rotation."""
        key = self._keys.get(w.id)
        if key is not None and key.hex() != w.secret:
            w = replace(w, secret=key.hex())
        pins = self._pins.get(w.id)
        if pins is not None and pins != (w.tls_pin, w.tls_pin_next):
            w = replace(w, tls_pin=pins[0], tls_pin_next=pins[1])
        return w


class WithCurrentSecrets(list[Worker]):
    """Workers listed when a sweep starts, each handed out with the secret current at its turn.

    A long sweep must not sign a sync with a secret that a rotation retired meanwhile.
    """

    def __init__(self, workers: list[Worker], keys: KeyRing) -> None:
        super().__init__(workers)
        self._keys = keys

    def __iter__(self) -> Iterator[Worker]:
        for w in super().__iter__():
            yield self._keys.current(w)
