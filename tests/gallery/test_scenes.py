"""Context snapshots and per-frame boxes in the match log (gallery/scenes.py, gallery/matchlog.py): written beside
the thumbnail, boxed and labelled, owner-only; refused, rolled back, purged, replaced and kept exactly like
thumbnails."""

from __future__ import annotations

import dataclasses
import errno
import stat
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest
from sqlalchemy import select, update

from core.types import SceneSnapshot
from gallery.db import Database
from gallery.errors import MatchLogError, StorageError
from gallery.forensic import track_detail
from gallery.matchlog import MatchLogWriter, purge_older_than
from gallery.models import Run, Track
from gallery.runs import mark_interrupted_runs, replace_runs
from gallery.scenes import MATCH_COLOR, UNKNOWN_COLOR, draw_scene, scene_label, snapshot_path
from gallery.thumbnails import ThumbnailStore
from gallery.track_boxes import unpack_boxes
from tests.gallery.test_matchlog import record

SEED = 3
BOX = np.array([60.0, 40.0, 140.0, 130.0], np.float32)


def _scene(width: int = 320, height: int = 180) -> SceneSnapshot:
    image = np.random.default_rng(SEED).integers(0, 80, (height, width, 3), dtype=np.uint8)  # no drawn color
    return SceneSnapshot(image, BOX.copy(), 1.5, 0.5)


def _boxes(frames: int, start: float) -> np.ndarray:
    t = start + np.arange(frames, dtype=np.float32) / 10
    return np.column_stack([t, np.tile(BOX * 2, (frames, 1))]).astype(np.float32)


def _evidence(track_id: int, decision: str = "unknown", **kw):
    rec = record(track_id, decision, **kw)
    return dataclasses.replace(rec, scene=_scene(), boxes=_boxes(rec.frames, rec.start_time))


def _near(image: np.ndarray, color) -> np.ndarray:
    return np.abs(image.astype(np.int16) - np.array(color, np.int16)).max(axis=-1) <= 60


@pytest.mark.parametrize("decision, color", [("match", MATCH_COLOR), ("unknown", UNKNOWN_COLOR)])
def test_snapshot_beside_the_thumbnail_boxed_labelled_owner_only(db_url, tmp_path, decision, color):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        with MatchLogWriter(db, source="cam", config_hash="c", thumbnails=store) as writer:
            writer.record(_evidence(1, decision, score=0.7))
            writer.record(dataclasses.replace(record(2), boxes=None))  # no scene, no boxes: none stored
        with db.session() as session:
            rows = {t.track_id: t for t in session.scalars(select(Track))}
        one, two = rows[1], rows[2]
        assert one.snapshot == snapshot_path(one.thumbnail) == one.thumbnail.replace(".jpg", "_scene.jpg")
        assert two.snapshot is None and two.boxes is None
        np.testing.assert_array_equal(unpack_boxes(one.boxes), _boxes(10, 1.0))
        file = store.resolve(one.snapshot)
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
        image = cv2.imread(str(file))
        assert image.shape == (180, 320, 3)
        x1, y1, x2, y2 = BOX.astype(int)
        assert _near(image[y1 + 5 : y2 - 5, x1], color).mean() > 0.9  # left edge
        assert _near(image[y2, x1 + 5 : x2 - 5], color).mean() > 0.9  # bottom edge
        assert _near(image[y1 - 12 : y1 - 4, x1 + 2 : x1 + 30], color).mean() > 0.3  # label band above
        assert (
            _near(image[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10], color).mean() < 0.05
        )  # the face is not covered
        ref = f"{writer.run_id}:1"
        assert track_detail(db, ref)["snapshot"] == one.snapshot
        assert track_detail(db, f"{writer.run_id}:2")["snapshot"] is None


@pytest.mark.parametrize(
    "decision, cands, label",
    [
        ("match", [{"name": "ann", "score": 0.712}], "ann 0.71  4:9"),
        ("unknown", [{"name": "ann", "score": 0.2}], "unknown  4:9"),
        ("unknown", [], "unknown  4:9"),
    ],
)
def test_scene_label(decision, cands, label):
    assert scene_label(decision, cands, 4, 9) == label


@pytest.mark.parametrize(
    "box",
    [
        [0, 0, 50, 40],
        [280, 150, 330, 200],
        [-20, -20, 400, 300],
        [200, 100, 150, 60],
    ],  # corners, outside, swapped
)
def test_drawing_stays_in_the_image_and_never_touches_the_shared_frame(box):
    scene = _scene()
    scene = SceneSnapshot(scene.image, np.array(box, np.float32), 0.0)
    before = scene.image.copy()
    drawn = draw_scene(scene, "Zoë 0.90  1:1 " + "x" * 200, True)
    np.testing.assert_array_equal(scene.image, before)
    assert drawn.shape == before.shape and _near(drawn, MATCH_COLOR).any()


def test_keep_thumbnails_false_writes_no_snapshot_but_keeps_boxes(db_url, tmp_path):
    with Database(db_url) as db:
        with MatchLogWriter(db, source="cam", config_hash="c", keep_thumbnails=False) as writer:
            writer.record(_evidence(1))
        with db.session() as session:
            t = session.scalars(select(Track)).one()
        assert (t.thumbnail, t.snapshot) == (None, None) and len(unpack_boxes(t.boxes)) == 10
    assert not list(tmp_path.rglob("*.jpg"))


@pytest.mark.parametrize("boxes", [np.zeros((3, 4)), np.full((2, 5), np.nan)])
def test_bad_boxes_are_refused_before_anything_is_written(db_url, tmp_path, boxes):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db, MatchLogWriter(db, source="cam", config_hash="c", thumbnails=store) as w:
        with pytest.raises(MatchLogError, match=r"track 1: track boxes: expected finite \[K, 5\]"):
            w.record(dataclasses.replace(_evidence(1), boxes=boxes))
    assert not list(tmp_path.rglob("*.jpg"))


def test_a_full_disk_at_the_snapshot_writes_no_batch_and_names_the_file(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    store = ThumbnailStore(tmp_path / "thumbs")
    writer = MatchLogWriter(db, source="cam", config_hash="h", batch_size=10, thumbnails=store)
    writer.record(_evidence(1))
    real_write = ThumbnailStore.write

    def full_at_scenes(self, rel, image, quality=90):
        if rel.endswith("_scene.jpg"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / rel))
        return real_write(self, rel, image, quality)

    monkeypatch.setattr(ThumbnailStore, "write", full_at_scenes)
    with pytest.raises(StorageError, match="snapshot .*track1_scene.jpg: expected room to write"):
        writer.flush()
    assert not list(store.root.rglob("*.jpg"))  # the thumbnail written before it is removed again
    with db.session() as session:
        assert session.scalars(select(Track)).all() == []
    monkeypatch.setattr(ThumbnailStore, "write", real_write)
    writer.close("finished")
    assert sorted(p.name for p in store.root.rglob("*.jpg")) == ["track1.jpg", "track1_scene.jpg"]
    db.close()


def test_purge_deletes_snapshots_with_their_tracks(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    with Database(db_url) as db:
        with MatchLogWriter(db, source="cam", config_hash="c", thumbnails=store) as writer:
            for t, age in enumerate([40, 1]):
                writer.record(_evidence(t, at=now - timedelta(days=age)))
        assert purge_older_than(db, 30, store, now=now) == 1
        assert sorted(p.name for p in store.root.rglob("*.jpg")) == ["track1.jpg", "track1_scene.jpg"]
        assert purge_older_than(db, 0, store, now=now) == 1
        assert not list(store.root.rglob("*.jpg"))


def test_replaced_runs_lose_their_snapshots_and_interrupted_runs_keep_theirs(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        with MatchLogWriter(db, source="a.mp4", uri="/v/a.mp4", config_hash="h", thumbnails=store) as old:
            old.record(_evidence(1))
        dead = MatchLogWriter(db, source="b.mp4", uri="/v/b.mp4", config_hash="h", thumbnails=store)
        dead.record(_evidence(2))
        dead.flush()
        with db.session() as session:  # the owner of "b.mp4" is a pid that no longer exists
            session.execute(update(Run).where(Run.id == dead.run_id).values(owner_pid=2**22 + 7))
        assert mark_interrupted_runs(db, store) == 1
        kept = store.resolve(snapshot_path(dead._thumb_path(2)))
        assert kept.exists()  # referenced from SQL: kept for the run that continues it

        old_files = sorted(store.root.rglob(f"source{old.source_id}/run{old.run_id}/*.jpg"))
        assert [p.name for p in old_files] == ["track1.jpg", "track1_scene.jpg"]
        with MatchLogWriter(db, source="a.mp4", uri="/v/a.mp4", config_hash="h", thumbnails=store) as new:
            new.record(_evidence(1))
        assert replace_runs(db, new.run_id, store) == [old.run_id]
        assert not any(p.exists() for p in old_files)
        assert store.resolve(snapshot_path(new._thumb_path(1))).exists()
