"""Shared fixtures: every test runs with its config and data dirs under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point VECTIS_CONFIG_DIR and VECTIS_DATA_DIR at tmp_path, and drop inherited settings."""
    import os

    for name in list(os.environ):
        if name.startswith("VECTIS_"):
            monkeypatch.delenv(name)
    conf = tmp_path / "etc-vectis"
    data = tmp_path / "var-lib-vectis"
    monkeypatch.setenv("VECTIS_CONFIG_DIR", str(conf))
    monkeypatch.setenv("VECTIS_DATA_DIR", str(data))
    return tmp_path
