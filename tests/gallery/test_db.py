"""gallery/db.py: URLs, connection failures, schema creation through Alembic on both back ends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from gallery.db import Database
from gallery.errors import DatabaseError
from gallery.models import Base, GalleryMeta


def test_migration_builds_the_model_schema(db_url):
    with Database(db_url) as db:
        with db.engine.connect() as conn:
            assert (
                compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
                == []
            )
        with db.session() as session:
            assert session.scalar(select(GalleryMeta.version)) == 0
    with Database(db_url, create=False) as again:  # reopening an up-to-date schema changes nothing
        with again.session() as session:
            assert session.scalar(select(GalleryMeta.version)) == 0


def test_sqlite_pragmas(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'g.db'}") as db, db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


@pytest.mark.parametrize(
    "url,message",
    [
        ("not a url", "expected sqlite:///FILE or postgresql"),
        ("mysql://user@host/db", "expected a sqlite or postgresql URL"),
        ("sqlite://", "expected a SQLite file"),
        ("sqlite:///{tmp}/missing-folder/g.db", "does not exist"),
        ("postgresql+psycopg://nobody:secret@127.0.0.1:{port}/db", "cannot connect to"),
    ],
)
def test_bad_urls_are_refused(tmp_path, url, message):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(DatabaseError, match=message) as err:
        Database(url.format(tmp=tmp_path, port=port))
    assert "secret" not in str(err.value)


def test_read_only_open_refuses_missing_or_empty_database(tmp_path):
    with pytest.raises(DatabaseError, match="no database file"):
        Database(f"sqlite:///{tmp_path / 'none.db'}", create=False)
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "empty.db").touch()
    with pytest.raises(DatabaseError, match="expected the gallery schema"):
        Database(f"sqlite:///{tmp_path / 'empty.db'}", create=False)


def test_migration_downgrades_and_upgrades_again(db_url):
    from alembic import command
    from sqlalchemy import inspect

    from gallery.db import _alembic_config

    with Database(db_url) as db:
        cfg = _alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    with Database(db_url) as again:
        assert {"identities", "match_events", "tracks"} <= set(inspect(again.engine).get_table_names())


OLD_ORDERED = {
    "match_events": {
        "ix_match_events_at",
        "ix_match_events_decision_at",
        "ix_match_events_identity_id_at",
        "ix_match_events_source_id_at",
    },
    "tracks": {"ix_tracks_created_at", "ix_tracks_source_id_created_at"},
}


def _index_names(db: Database, table: str) -> set[str]:
    from sqlalchemy import inspect

    return {ix["name"] for ix in inspect(db.engine).get_indexes(table)}


def test_migration_0002_keeps_the_log_and_reorders_its_indexes(db_url):
    """A log written at revision 0001 upgrades in place: same rows, time indexes ending with id."""
    from alembic import command

    from gallery.db import _alembic_config
    from gallery.queries import Filters, find_matches
    from tests.gallery.helpers import seed_log

    with Database(db_url) as db:
        cfg = _alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        for table, names in OLD_ORDERED.items():
            assert names <= _index_names(db, table)
        seed_log(db)
    with Database(db_url) as db:
        for table, names in OLD_ORDERED.items():
            now = _index_names(db, table)
            assert not names & now and {f"{name}_id" for name in names} <= now
        assert [r["track_id"] for r in find_matches(db, Filters(identity="ann")).rows] == [6, 4, 2, 0]
