"""One rule for a track's files (gallery/track_files.py): thumbnail, context snapshot and cached clip go together
when purge, a replaced run or an interrupted run's cleanup deletes tracks; the files of kept tracks stay."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from gallery.db import Database
from gallery.matchlog import MatchLogWriter, purge_older_than
from gallery.models import Run
from gallery.runs import mark_interrupted_runs, replace_runs
from gallery.thumbnails import ThumbnailStore
from gallery.track_files import FILE_COLUMNS, clip_path, delete_track_files, track_files
from tests.gallery.test_scenes import _evidence

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _cache_clips(db: Database, store: ThumbnailStore) -> dict[int, list]:
    """A cached clip file beside every track's thumbnail; each track's files (by track id), all existing."""
    with db.session() as session:
        rows = session.execute(select(*FILE_COLUMNS)).all()
    out = {}
    for row in rows:
        clip = store.resolve(clip_path(*row[:3]))
        clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        out[row.track_id] = [store.resolve(f) for f in track_files([row])]
        assert len(out[row.track_id]) == 3 and all(p.is_file() for p in out[row.track_id])
    return out


def test_track_files_names_thumbnail_snapshot_and_clip_in_the_tracks_folder():
    assert track_files([(3, 7, 12, "source3/run7/track12.jpg", "source3/run7/track12_scene.jpg")]) == [
        "source3/run7/track12.jpg",
        "source3/run7/track12_scene.jpg",
        "source3/run7/track12_clip.mp4",
    ]
    assert track_files([(3, 7, 12, None, None)]) == ["source3/run7/track12_clip.mp4"]


def test_a_purged_track_leaves_no_clip_behind(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        with MatchLogWriter(db, source="cam", config_hash="c", thumbnails=store) as writer:
            for t, age in enumerate([40, 1]):
                writer.record(_evidence(t, at=NOW - timedelta(days=age)))
        files = _cache_clips(db, store)
        assert purge_older_than(db, 30, store, now=NOW) == 1
        assert not any(p.exists() for p in files[0])  # the old track: crop, snapshot and clip gone
        assert all(p.exists() for p in files[1])  # the recent one untouched
        assert purge_older_than(db, 0, store, now=NOW) == 1
        assert not [p for p in store.root.rglob("*") if p.is_file()]


def test_a_replaced_run_loses_its_clips_and_an_interrupted_run_keeps_its_tracks_clips(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        with MatchLogWriter(db, source="a.mp4", uri="/v/a.mp4", config_hash="h", thumbnails=store) as old:
            old.record(_evidence(1))
        dead = MatchLogWriter(db, source="b.mp4", uri="/v/b.mp4", config_hash="h", thumbnails=store)
        dead.record(_evidence(2))
        dead.flush()
        files = _cache_clips(db, store)
        stray = store.resolve(clip_path(dead.source_id, dead.run_id, 99))  # no track row references it
        stray.write_bytes(b"x")
        with db.session() as session:
            session.execute(update(Run).where(Run.id == dead.run_id).values(owner_pid=2**22 + 7))
        assert mark_interrupted_runs(db, store) == 1
        assert all(p.exists() for p in files[2]) and not stray.exists()
        with MatchLogWriter(db, source="a.mp4", uri="/v/a.mp4", config_hash="h", thumbnails=store) as new:
            new.record(_evidence(1))
        assert replace_runs(db, new.run_id, store) == [old.run_id]
        assert not any(p.exists() for p in files[1])
        assert not store.resolve(f"source{old.source_id}/run{old.run_id}").exists()


@pytest.mark.parametrize("rel", ["../escape.jpg", "/abs/track1.jpg"])
def test_a_file_outside_the_store_is_logged_and_left(tmp_path, rel, caplog):
    store = ThumbnailStore(tmp_path / "thumbs")
    outside = tmp_path / "escape.jpg"
    outside.write_bytes(b"x")
    assert delete_track_files(store, [(1, 1, 1, rel, None)]) == 0
    assert outside.exists()
    assert "not removed" in caplog.text
