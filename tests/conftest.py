"""Shared test helpers: where the shared fixtures and assets are, skipping cleanly when they are absent."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "facemoe"
ASSETS = SHARED / "assets"


def require(path: Path) -> Path:
    """Return ``path`` or skip the test, saying which shared file is missing."""
    if not path.exists():
        pytest.skip(f"shared test material not found: {path} (a checkout without ../shared)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return require(FIXTURES)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return require(ASSETS)
