"""The HMAC key of every registered worker, as the dashboard holds it now.

Registration adds a key, a rotation replaces it, a deletion drops it; heartbeats and syncs
sign and verify with what is here, so a record read before a rotation is never signed with
a retired secret.
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

    def get(self, worker_id: str) -> bytes | None:
        return self._keys.get(worker_id)

    def set(self, worker_id: str, secret: str) -> None:
        self._keys[worker_id] = key_from_secret(secret)

    def drop(self, worker_id: str) -> None:
        self._keys.pop(worker_id, None)

    def load(self, secrets_by_id: Mapping[str, str]) -> None:
        self._keys.update({i: key_from_secret(s) for i, s in secrets_by_id.items()})

    def current(self, w: Worker) -> Worker:
        """`w` with the secret held now: a record read earlier may predate a rotation."""
        key = self._keys.get(w.id)
        return w if key is None or key.hex() == w.secret else replace(w, secret=key.hex())


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
