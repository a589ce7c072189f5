"""Storage that refuses writes (gallery/db.py :func:`storage_error`, gallery/matchlog.py): a read-only SQLite file
or URI, a PostgreSQL read-only database, a full database, a full disk under the thumbnails. Each is one
:class:`StorageError` naming the database or file, nothing is half written, and a run's progress never runs
ahead of the tracks committed with it."""

from __future__ import annotations

import errno
import os
import sqlite3

import psycopg
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from gallery.db import Database, storage_error
from gallery.errors import DatabaseError, StorageError
from gallery.matchlog import MatchLogWriter
from gallery.models import Identity, Run, Track
from gallery.store import Gallery
from gallery.thumbnails import ThumbnailStore
from tests.gallery.test_matchlog import record


@pytest.mark.parametrize(
    "exc, expected",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/t.jpg"), "room to write"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "room to write"),
        (OSError(errno.EFBIG, "File too large"), "room to write"),
        (OSError(errno.EROFS, "Read-only file system"), "writable storage"),
        (OSError(errno.ENOENT, "No such file or directory"), None),
        (sqlite3.OperationalError("attempt to write a readonly database"), "read-only"),
        (sqlite3.OperationalError("database or disk is full"), "full disk or database"),
        (sqlite3.OperationalError("no such table: x"), None),
    ],
    ids=["ENOSPC", "EDQUOT", "EFBIG", "EROFS", "ENOENT", "sqlite read-only", "sqlite full", "other"],
)
def test_storage_errors_are_told_apart_from_the_rest(exc, expected):
    mapped = storage_error(exc, "database X")
    if expected is None:
        assert mapped is None
    else:
        assert (
            isinstance(mapped, StorageError)
            and expected in str(mapped)
            and str(mapped).startswith("database X")
        )


def _identities(url: str) -> int:
    with Database(url, create=False) as db, db.session() as session:
        return session.scalar(select(func.count()).select_from(Identity))


def _read_only(db_url: str, tmp_path) -> str:
    """The same database, opened read-only: a ``mode=ro`` SQLite URI, or a PostgreSQL database whose transactions
    are read-only."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///file:{make_url(db_url).database}?mode=ro&uri=true"
    url = make_url(db_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on')
    return db_url


def test_a_read_only_database_refuses_writes_in_one_error_naming_it(db_url, tmp_path):
    with Gallery.open(db_url) as gallery:
        gallery.add_identity("Ann")
    read_only = _read_only(db_url, tmp_path)
    with Gallery.open(read_only) as gallery:
        assert gallery.has_identity("Ann")  # reading works
        with pytest.raises(StorageError, match="expected a writable database, got a read-only one") as info:
            gallery.add_identity("Bob")
        assert "\n" not in str(info.value) and Database(read_only).shown in str(info.value)
        with pytest.raises(StorageError):
            gallery.remove_identity("Ann")
    assert _identities(read_only) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a file of mode 0444")
def test_a_read_only_file_refuses_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    Gallery.open(url).close()
    (tmp_path / "g.db").chmod(0o444)
    with Gallery.open(url) as gallery, pytest.raises(StorageError, match="read-only"):
        gallery.add_identity("Bob")


def test_a_read_only_uri_of_a_missing_file_is_not_created(tmp_path):
    with pytest.raises(DatabaseError, match="no database file"):
        Database(f"sqlite:///file:{tmp_path / 'none.db'}?mode=ro&uri=true")
    assert not (tmp_path / "none.db").exists()


def _run_row(db: Database, run_id: int) -> Run:
    with db.session() as session:
        return session.get(Run, run_id)


def _tracks(db: Database, run_id: int) -> list[int]:
    with db.session() as session:
        return sorted(session.scalars(select(Track.track_id).where(Track.run_id == run_id)))


def test_a_full_database_keeps_progress_with_the_tracks_committed(tmp_path):
    """SQLite's max_page_count makes the database full after a few batches: the failing batch and the progress
    noted with it are not stored, the run ends ``interrupted`` with the progress of its last commit."""
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    writer = MatchLogWriter(
        db, source="cam", config_hash="h", batch_size=2, thumbnails=None, keep_thumbnails=False
    )
    writer.record(record(1))
    writer.progress(10, 3.0)
    writer.record(record(2))  # a batch of 2: committed with the progress (10, 3.0)
    with db.session() as session:
        pages = session.connection().exec_driver_sql("PRAGMA page_count").scalar()
    event.listen(db.engine, "connect", lambda conn, _: conn.execute(f"PRAGMA max_page_count={pages}"))
    db.engine.dispose()  # the next connections are capped: the database is full
    committed = ((10, 3.0), [1, 2])
    for track_id in range(3, 400):
        writer.record(record(track_id))
        writer.progress(10 * track_id, track_id + 2.0)
        try:
            writer.flush()
        except StorageError as exc:
            assert "database or disk is full" in str(exc) and str(tmp_path / "g.db") in str(exc)
            break
        committed = ((10 * track_id, track_id + 2.0), list(range(1, track_id + 1)))
    else:
        pytest.fail("the capped database never filled up")
    run = _run_row(db, writer.run_id)
    assert ((run.frames_done, run.last_timestamp), _tracks(db, writer.run_id)) == committed
    assert track_id not in committed[1]  # the failing batch is not stored, nor the progress noted with it
    writer.close("interrupted")  # its flush fails again: logged, the caller's error is the one reported
    run = _run_row(db, writer.run_id)
    assert run.status == "interrupted"
    assert ((run.frames_done, run.last_timestamp), _tracks(db, writer.run_id)) == committed
    db.close()


def test_a_full_disk_under_the_thumbnails_writes_no_batch(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    store = ThumbnailStore(tmp_path / "thumbs")
    writer = MatchLogWriter(db, source="cam", config_hash="h", batch_size=10, thumbnails=store)
    writer.record(record(1))
    writer.progress(5, 4.0)
    real_write = ThumbnailStore.write
    calls = []

    def full_after_one(self, rel, image, quality=90):
        calls.append(rel)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / rel))
        return real_write(self, rel, image, quality)

    monkeypatch.setattr(ThumbnailStore, "write", full_after_one)
    writer.record(record(2))
    with pytest.raises(
        StorageError, match="thumbnail .*track2.jpg: expected room to write, got No space left"
    ):
        writer.flush()
    assert _tracks(db, writer.run_id) == [] and _run_row(db, writer.run_id).frames_done == 0
    assert not [p for p in store.root.rglob("*.jpg")]  # the first thumbnail of the batch is removed again
    monkeypatch.setattr(ThumbnailStore, "write", real_write)
    writer.close("finished")  # space is back: the kept batch goes in with its progress
    run = _run_row(db, writer.run_id)
    assert _tracks(db, writer.run_id) == [1, 2] and (run.status, run.frames_done) == ("finished", 5)
    db.close()


def test_a_closing_write_that_fails_marks_the_run_interrupted_and_raises(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    writer = MatchLogWriter(db, source="cam", config_hash="h", keep_thumbnails=False)
    writer.record(record(1))
    writer.progress(5, 4.0)

    def full(*_a, **_k):
        raise StorageError("database X: expected room to write, got a full disk or database")

    monkeypatch.setattr(MatchLogWriter, "_write", full)
    with pytest.raises(StorageError):
        writer.close("finished")
    monkeypatch.undo()
    run = _run_row(db, writer.run_id)
    assert run.status == "interrupted" and run.frames_done == 0 and _tracks(db, writer.run_id) == []
    db.close()


def test_storage_errors_leave_other_integrity_errors_alone(tmp_path):
    gallery = Gallery.open(f"sqlite:///{tmp_path / 'g.db'}")
    gallery.add_identity("Ann")
    with pytest.raises(Exception) as info:
        gallery.add_identity("Ann")
    assert not isinstance(info.value, StorageError)
    gallery.close()
