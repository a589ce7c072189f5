"""gallery/db.py: URLs, connection failures, schema creation through Alembic on both back ends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text

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
        seed_log(db)  # written by today's models, then taken back to 0001 (later revisions keep the rows)
        cfg = _alembic_config()
        # as Database migrates SQLite: foreign keys off, or a table rebuilt by a batch step cascades deletes
        engine = create_engine(db.url) if db.backend == "sqlite" else db.engine
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        for table, names in OLD_ORDERED.items():
            assert names <= _index_names(db, table)
    with Database(db_url) as db:
        for table, names in OLD_ORDERED.items():
            now = _index_names(db, table)
            assert not names & now and {f"{name}_id" for name in names} <= now
        assert [r["track_id"] for r in find_matches(db, Filters(identity="ann")).rows] == [6, 4, 2, 0]


# schema creation: serialized, atomic, owner-only files

CHILD = r"""
import sys, time
from pathlib import Path
url, gate, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
from gallery.db import Database
ready.touch()
deadline = time.monotonic() + 60
while not gate.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
with Database(url) as db:
    with db.session() as session:
        session.execute(__import__("sqlalchemy").text("SELECT 1"))
"""

KILLED = r"""
import sys, time
from pathlib import Path
from alembic.operations import Operations
url, marker = sys.argv[1], Path(sys.argv[2])
real = Operations.create_table
made = []
def create_table(self, *args, **kwargs):
    made.append(real(self, *args, **kwargs))
    if len(made) == 3:  # half the schema made: wait here to be killed
        marker.touch()
        time.sleep(60)
    return made[-1]
Operations.create_table = create_table
from gallery.db import Database
Database(url)
"""


def _schema_matches_models(db: Database) -> None:
    with db.engine.connect() as conn:
        assert (
            compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            == []
        )
    with db.session() as session:
        assert session.scalar(select(GalleryMeta.version)) == 0


def _child_env() -> dict[str, str]:
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_processes_opening_a_new_database_at_once_all_succeed(db_url, tmp_path):
    """Six commands opening the same new database at the same moment: all succeed, one schema."""
    import subprocess
    import sys
    import time

    gate = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, db_url, str(gate), str(tmp_path / f"ready{i}")],
            env=_child_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{i}").exists() for i in range(6)) and time.monotonic() < deadline:
            time.sleep(0.02)
        gate.touch()
        errors = [(c.wait(timeout=120), c.stderr.read()) for c in children]
    finally:
        for c in children:
            c.kill()
            c.wait(timeout=10)
    assert [rc for rc, _ in errors] == [0] * 6, [err[-2000:] for rc, err in errors if rc]
    with Database(db_url, create=False) as db:
        _schema_matches_models(db)


def test_threads_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'g.db'}"

    def open_close(_):
        Database(url).close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(open_close, range(8), timeout=120))
    with Database(url, create=False) as db:
        _schema_matches_models(db)


@pytest.mark.parametrize("start", ["new file", "empty file", "postgresql"])
def test_kill_during_schema_creation_leaves_a_database_that_opens(start, tmp_path, request):
    """SIGKILL half-way through the migration; the next normal open finishes the job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    if start == "postgresql":
        url = request.getfixturevalue("pg_cluster").new_database()
    else:
        url = f"sqlite:///{tmp_path / 'g.db'}"
        if start == "empty file":
            (tmp_path / "g.db").touch()
    marker = tmp_path / "half"
    child = subprocess.Popen([sys.executable, "-c", KILLED, url, str(marker)], env=_child_env())
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), "the child never reached the middle of the schema creation"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    if start == "new file":
        assert not (tmp_path / "g.db").exists()  # the half-made schema never took the database's name
    with Database(url) as db:
        _schema_matches_models(db)
    assert not [p.name for p in tmp_path.iterdir() if "creating" in p.name]


def test_new_sqlite_files_are_owner_only(tmp_path):
    import stat

    with Database(f"sqlite:///{tmp_path / 'g.db'}") as db, db.session() as session:
        session.execute(text("SELECT 1"))
        files = [p for p in tmp_path.iterdir() if p.name.startswith("g.db")]
        assert {p.name for p in files} >= {"g.db", "g.db-wal", "g.db-shm", "g.db.lock"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


def test_database_password_from_the_environment(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("FACEMOE_DB_PASSWORD", "env-secret")
    url = Database._parse("postgresql+psycopg://operator@db.example:5432/gallery")
    assert url.password == "env-secret"
    assert "env-secret" not in url.render_as_string(hide_password=True)
    assert Database._parse("postgresql://operator:own@db.example/gallery").password == "own"  # URL wins
    assert Database._parse(f"sqlite:///{tmp_path / 'g.db'}").password is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    with pytest.raises(DatabaseError, match="cannot connect to") as err:
        Database(f"postgresql+psycopg://operator@127.0.0.1:{port}/gallery")
    assert "env-secret" not in str(err.value) and "***" in str(err.value)


def test_migration_0007_marks_faces_enrolled_from_tracks_by_content(db_url):
    """Media enrolled from a track before 0006 become kind ``track`` with that track; a photo merely named like one
    stays an image."""
    from types import SimpleNamespace

    from alembic import command
    from sqlalchemy import select

    from gallery.db import _alembic_config
    from gallery.enroll import Enroller
    from gallery.media import MediaVector
    from gallery.models import Media, Track
    from gallery.store import Gallery
    from tests.gallery.helpers import seed_log

    with Gallery.open(db_url) as gallery:
        seed_log(gallery.db)
        with gallery.db.session() as s:
            run, track, pk, dim = s.execute(select(Track.run_id, Track.track_id, Track.id, Track.dim)).first()
        Enroller(gallery, lambda image: [], SimpleNamespace(embedder_id="e4", dim=dim)).enroll_tracks(
            "cyd", [f"{run}:{track}"], force=True
        )
        forged = MediaVector(f"track {run}:{track} (x).png", "ab" * 32, 0.9, [1.0] + [0.0] * (dim - 1), 1.0)
        gallery.add_media("dee", "e4", [forged], create=True)
        cfg = _alembic_config()
        engine = create_engine(gallery.db.url) if gallery.db.backend == "sqlite" else gallery.db.engine
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0005")  # as a gallery written before media knew their kind
    with Database(db_url) as db, db.session() as s:
        kinds = {
            path: (kind, track_pk)
            for path, kind, track_pk in s.execute(select(Media.path, Media.kind, Media.track_pk))
        }
    enrolled = [v for p, v in kinds.items() if p.startswith("track ") and p != forged.path]
    assert enrolled == [("track", pk)] and kinds[forged.path] == ("image", None)
