"""Gallery test fixtures: every database test runs on SQLite and on a throwaway PostgreSQL cluster.

The cluster (``pg_cluster`` in ``tests/conftest.py``) is created by the suite itself, shared by the session and
stopped at the end; each test gets a fresh database on it.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A URL of an empty database: a SQLite file in tmp_path, or a fresh database on the throwaway cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gallery.db'}"
    return request.getfixturevalue("pg_cluster").new_database()
