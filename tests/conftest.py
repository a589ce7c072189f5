"""Shared test helpers: where the shared fixtures and assets are, skipping cleanly when they are absent."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.gallery.pgcluster import PgCluster, pg_bindir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "facemoe"
ASSETS = SHARED / "assets"


# Besides the six friends, the friends clip holds one more face: a photo on the fridge (about 14 px, top right,
# 18.9-23.0 s), which faces from 8 px find where a complete full detection falls on it. It has no ground truth.
FRIDGE_PHOTO = (1180.0, 1240.0, 80.0, 125.0)  # x_min, x_max, y_min, y_max of its face centre (px)


def on_the_fridge(centre: tuple[float, float] | None) -> bool:
    """Whether a face centre of the friends clip is the photo on the fridge."""
    x0, x1, y0, y1 = FRIDGE_PHOTO
    return centre is not None and x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1


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


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the whole session (its own port and socket dir), stopped at the end."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql "
            "(scripts/system-deps.sh) or set PG_BINDIR"
        )
    root = Path(tempfile.mkdtemp(prefix="gallery-pg-"))
    cluster = PgCluster(bindir, root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A URL of an empty database: a SQLite file in tmp_path, or a fresh database on the throwaway cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gallery.db'}"
    return request.getfixturevalue("pg_cluster").new_database()
