"""The recordings index (gallery.recordings) on SQLite and PostgreSQL: the segments covering a window, retention
by age and by a disk cap (oldest first, never a segment an open case holds), the listing, the store's modes, and
recovery of segments a killed writer left (pipeline.live.recording_recovery) on real fragmented MP4 files."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.evidence_models import Case, CaseHold, Recording
from gallery.queries import Filters
from gallery.recordings import (
    RecordingError,
    RecordingStore,
    add_segment,
    apply_retention,
    close_segment,
    find_recordings,
    pts_at,
    segments_for,
    wall_at,
)
from pipeline.live.recording_recovery import camera_lock, recover

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(db_url):
    with Database(db_url) as database:
        yield database


@pytest.fixture
def store(tmp_path):
    return RecordingStore(tmp_path / "rec")


def segment(
    db, store, camera: str, k: int, size: int = 100, length_s: float = 60.0, done: bool = True
) -> int:
    """Segment ``k`` of ``camera``: ``T0 + k * length_s`` for ``length_s``, a file of ``size`` bytes."""
    start = T0 + timedelta(seconds=k * length_s)
    rel = store.segment_path(camera, start)
    rec_id = add_segment(db, camera, start, rel)
    part = store.create(rel)
    part.write_bytes(b"x" * size)
    if done:
        os.replace(part, store.resolve(rel))
        close_segment(db, rec_id, start + timedelta(seconds=length_s), size)
    return rec_id


def hold(db, rec_id: int, name: str, closed: bool = False) -> None:
    with db.session() as s:
        case = Case(name=name, operator="op", closed_at=T0 if closed else None)
        s.add(case)
        s.flush()
        s.add(CaseHold(case_id=case.id, recording_id=rec_id))


def ids(db) -> list[int]:
    with db.session() as s:
        return list(s.scalars(select(Recording.id).order_by(Recording.id)))


def test_segments_for_a_window_are_the_overlapping_done_ones_in_order(db, store):
    made = [segment(db, store, "gate", k) for k in range(4)]
    segment(db, store, "lobby", 1)
    segment(db, store, "gate", 4, done=False)  # being written: never served
    got = segments_for(db, "gate", T0 + timedelta(seconds=90), T0 + timedelta(seconds=300))
    assert [s.id for s in got] == made[1:4]
    assert got[0].started_at == T0 + timedelta(seconds=60) and got[0].ended_at == T0 + timedelta(seconds=120)
    assert (
        segments_for(db, "gate", T0 + timedelta(seconds=120), T0 + timedelta(seconds=120.5))[0].id == made[2]
    )
    assert segments_for(db, "gate", T0 - timedelta(seconds=60), T0) == []
    seg = got[0]
    assert wall_at(seg, 1.5) == seg.started_at + timedelta(seconds=1.5)
    assert pts_at(seg, wall_at(seg, 12.25)) == pytest.approx(12.25)


def test_listing_shows_finished_segments_newest_first_by_camera_and_window(db, store):
    for k in range(3):
        segment(db, store, "gate", k, size=10 + k)
    segment(db, store, "lobby", 0)
    segment(db, store, "gate", 3, done=False)
    rows = find_recordings(db, Filters(source="gate")).rows
    assert [r["size"] for r in rows] == [12, 11, 10]
    assert set(rows[0]) >= {"camera", "started_at", "ended_at", "size", "path"}
    window = Filters(since=T0 + timedelta(seconds=61), until=T0 + timedelta(seconds=119))
    assert [(r["camera"], r["size"]) for r in find_recordings(db, window).rows] == [("gate", 11)]


@pytest.mark.parametrize(
    ("days", "cap", "expected_left"),
    [
        (None, 350, [3, 4, 5]),  # 6 x 100 bytes, cap 350: the three oldest go
        (None, 600, [0, 1, 2, 3, 4, 5]),  # at the cap: nothing
        (None, 1, []),  # a tiny cap: everything not held
        (0.5 / 24, None, [3, 4, 5]),  # 30 min before "now" (T0 + 1 h): those ended at 9, 18, 27 min go
        (1.0, None, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_retention_deletes_oldest_first_rows_and_files(db, store, days, cap, expected_left):
    made = [segment(db, store, "gate", k, length_s=540.0 if days else 60.0) for k in range(6)]
    # with days: segments of 9 min, ended at 9, 18, ... 54 min after T0
    now = T0 + timedelta(hours=1) if days else None
    paths = [store.resolve(r["path"]) for r in reversed(find_recordings(db, Filters()).rows)]
    deleted = apply_retention(db, store, days, cap, now=now)
    left = [made.index(i) for i in ids(db)]
    assert left == expected_left
    assert [d.id for d in deleted] == [made[k] for k in range(6) if k not in expected_left]
    assert [p.exists() for p in paths] == [k in expected_left for k in range(6)]


def test_retention_never_deletes_a_segment_an_open_case_holds(db, store):
    made = [segment(db, store, "gate", k) for k in range(5)]
    hold(db, made[0], "open case")
    hold(db, made[1], "closed case", closed=True)
    writing = segment(db, store, "gate", 5, done=False)
    apply_retention(db, store, None, 1)
    assert ids(db) == [made[0], writing]  # the closed case's segment went, the open one's stayed
    apply_retention(db, store, 0.001, None, now=T0 + timedelta(days=30))
    assert ids(db) == [made[0], writing]


def test_store_files_are_owner_only_and_a_folder_that_cannot_be_written_is_one_error(tmp_path, store):
    part = store.create(store.segment_path("gate", T0))
    assert part.stat().st_mode & 0o777 == 0o600
    assert {(store.root / p).stat().st_mode & 0o777 for p in ("gate", "gate/2026-03-01")} == {0o700}
    assert store.segment_path("../x", T0).startswith("cam-")  # a name that is no plain folder name
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RecordingError, match=r"^recording folder .*file/rec: expected a writable folder"):
        RecordingStore(blocker / "rec").check_writable()
    store.check_writable()


def test_store_folder_beside_the_database(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'site.db'}") as database:
        assert (
            RecordingStore.for_recordings(database, None, GalleryConfig()).root
            == tmp_path / "site_recordings"
        )
        assert (
            RecordingStore.for_recordings(database, str(tmp_path / "x"), GalleryConfig()).root
            == tmp_path / "x"
        )


def fragmented(path: Path, seconds: float = 3.0) -> None:
    """A fragmented MP4 (keyframe every 0.5 s) as the recorder writes it."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=160x120:rate=24:duration={seconds}",
        ]
        + ["-c:v", "libx264", "-g", "12", "-bf", "0", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4"]
        + [str(path)],
        check=True,
        timeout=60,
    )


def decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        frames = [f.time for f in c.decode(video=0)]
    return frames[-1] if frames else -1.0


def test_recovery_finalises_a_readable_prefix_discards_garbage_and_removes_orphans(db_url, tmp_path, store):
    db = Database(db_url)
    cut_id = segment(db, store, "gate", 0, done=False)
    bad_id = segment(db, store, "gate", 1, done=False)
    kept_id = segment(db, store, "gate", 2)
    cut_rel, bad_rel = (
        r for r in [store.segment_path("gate", T0 + timedelta(seconds=60 * k)) for k in (0, 1)]
    )
    whole = tmp_path / "whole.mp4"
    fragmented(whole)
    data = whole.read_bytes()
    store.partial(store.resolve(cut_rel)).write_bytes(data[: len(data) * 2 // 3])  # killed mid-fragment
    orphan = store.resolve(store.segment_path("gate", T0 + timedelta(hours=5)))
    orphan.write_bytes(b"left")
    counts = recover(db, store)
    assert counts == {"finalised": 1, "discarded": 1, "orphans": 1}
    assert ids(db) == [cut_id, kept_id] and bad_id not in ids(db)
    seg = segments_for(db, "gate", T0, T0 + timedelta(seconds=1))[0]
    path = store.resolve(seg.path)
    assert 0.5 < decoded_seconds(path) < 3.0 and not store.partial(path).exists()
    assert (seg.ended_at - seg.started_at).total_seconds() == pytest.approx(decoded_seconds(path), abs=0.1)
    assert seg.size == path.stat().st_size and path.stat().st_mode & 0o777 == 0o600
    assert not orphan.exists() and not store.partial(store.resolve(bad_rel)).exists()
    assert recover(db, store) == {"finalised": 0, "discarded": 0, "orphans": 0}
    db.close()


def test_recovery_leaves_a_camera_that_a_live_recorder_holds(db, store):
    rec_id = segment(db, store, "gate", 0, done=False)
    with camera_lock(store, "gate") as mine:
        assert mine
        assert recover(db, store) == {"finalised": 0, "discarded": 0, "orphans": 0}
        assert ids(db) == [rec_id]
    assert recover(db, store)["discarded"] == 1
