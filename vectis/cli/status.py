"""`vectis status`: this worker's registration and sync state."""

from __future__ import annotations

from vectis.errors import VectisError


def status() -> None:
    """Show this worker's status: ID, subdomain, IP, sync status, last sync, error, service."""
    raise VectisError("vectis status is not built yet")
