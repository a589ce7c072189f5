"""Gallery test fixtures: every database test runs on SQLite and on a throwaway PostgreSQL cluster.

The cluster is created by the suite itself (see :mod:`tests.gallery.pgcluster`), shared by the session and
stopped at the end; each test gets a fresh database on it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.gallery.pgcluster import PgCluster, pg_bindir


@pytest.fixture(scope="session")
def pg_cluster():
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
