"""`vectis register`, `vectis sync`, `vectis demo`: the worker's side of the flows."""

from __future__ import annotations

from vectis.errors import VectisError


def register() -> None:
    """Register this worker with the dashboard (needs an enrollment token)."""
    raise VectisError("vectis register is not built yet")


def sync() -> None:
    """Register if not yet registered and a token is given; else send a signed heartbeat."""
    raise VectisError("vectis sync is not built yet")


def demo() -> None:
    """Run a dashboard and a worker on this machine, registered and synced."""
    raise VectisError("vectis demo is not built yet")
