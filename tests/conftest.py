"""Shared fixtures: every test runs with its config and data dirs under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
# Loopback, where every test's workers live, and the private and documentation ranges that
# tests use as stand-ins for public addresses: a dashboard refuses all of them by default.
TEST_NETWORKS = (
    "127.0.0.0/8,::1/128,10.0.0.0/8,192.0.2.0/24,198.51.100.0/24,203.0.113.0/24,2001:db8::/32"
)
# Set for the whole session too, so that dashboards started by module-scoped fixtures (before
# `isolated` runs) allow them as well.
os.environ["VECTIS_WORKER_NETWORKS"] = TEST_NETWORKS


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point VECTIS_CONFIG_DIR and VECTIS_DATA_DIR at tmp_path, drop inherited settings, allow
    the test networks."""
    for name in list(os.environ):
        if name.startswith("VECTIS_"):
            monkeypatch.delenv(name)
    conf = tmp_path / "etc-vectis"
    data = tmp_path / "var-lib-vectis"
    monkeypatch.setenv("VECTIS_CONFIG_DIR", str(conf))
    monkeypatch.setenv("VECTIS_DATA_DIR", str(data))
    monkeypatch.setenv("VECTIS_WORKER_NETWORKS", TEST_NETWORKS)
    return tmp_path
