"""gallery/matchlog.py: batched writes, run progress, crash safety (a killed process), validation,
retention."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import func, select, update

from gallery.db import Database
from gallery.errors import MatchLogError
from gallery.matchlog import MatchLogWriter, TrackRecord, purge_older_than
from gallery.models import MatchEvent, Run, Source, Track
from gallery.runs import mark_interrupted_runs, resume_point
from gallery.thumbnails import ThumbnailStore
from tests.conftest import ROOT


def record(
    track_id: int,
    decision: str = "unknown",
    thumb: bool = True,
    at: datetime | None = None,
    score: float = 0.3,
) -> TrackRecord:
    template = np.zeros(4, np.float32)
    template[track_id % 4] = 1.0
    return TrackRecord(
        track_id=track_id,
        start_time=track_id * 1.0,
        end_time=track_id + 2.0,
        frames=10,
        crops_embedded=3,
        template=template,
        embedder_id="e4",
        candidates=[(1, "ann", score), (2, "bob", score - 0.1)],
        decision=decision,
        threshold=0.5,
        thumbnail=np.full((32, 24, 3), 80, np.uint8) if thumb else None,
        at=at,
    )


def _count(db: Database, model) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_batches_progress_and_close(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        writer = MatchLogWriter(
            db,
            source="lobby",
            kind="camera",
            uri="rtsp://cam/1",
            config_hash="cfg1",
            thumbnails=store,
            batch_size=3,
        )
        for t in range(4):
            writer.record(record(t, thumb=t != 1))
            writer.progress(frames_done=25 * (t + 1), last_timestamp=t + 0.5)
        assert _count(db, Track) == 3 and _count(db, MatchEvent) == 3  # one batch written, one queued
        with db.session() as session:
            run = session.get(Run, writer.run_id)
            assert (run.status, run.frames_done, run.last_timestamp) == (
                "running",
                50,
                1.5,
            )  # progress noted before the batch was written
        writer.close()
        with db.session() as session:
            run = session.get(Run, writer.run_id)
            assert (run.status, run.frames_done, run.config_hash) == ("finished", 100, "cfg1")
            assert run.finished_at is not None
            tracks = session.scalars(select(Track).order_by(Track.track_id)).all()
            assert [t.thumbnail is None for t in tracks] == [False, True, False, False]
            assert all(store.resolve(t.thumbnail).is_file() for t in tracks if t.thumbnail)
            event = session.scalar(select(MatchEvent).where(MatchEvent.track_pk == tracks[0].id))
            assert event.candidates == [
                {"identity_id": 1, "name": "ann", "score": 0.3},
                {"identity_id": 2, "name": "bob", "score": pytest.approx(0.2)},
            ]
            assert (event.decision, event.identity_id, event.score) == ("unknown", None, 0.3)
        second = MatchLogWriter(db, source="lobby", config_hash="cfg2")  # same source, new run
        second.close()
        assert _count(db, Source) == 1 and _count(db, Run) == 2


def test_default_thumbnail_store_is_beside_a_sqlite_database(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'site.db'}") as db:
        with MatchLogWriter(db, source="cam", config_hash="c") as writer:
            writer.record(record(4))
        with MatchLogWriter(db, source="cam", config_hash="c", keep_thumbnails=False) as silent:
            silent.record(record(5))
        with db.session() as session:
            thumbs = dict(session.execute(select(Track.track_id, Track.thumbnail)).all())
    assert thumbs == {4: f"source1/run{writer.run_id}/track4.jpg", 5: None}
    assert (tmp_path / "site_thumbnails" / thumbs[4]).is_file()


def test_match_on_a_removed_identity_keeps_the_event(db_url):
    with Database(db_url) as db:
        with MatchLogWriter(db, source="cam", config_hash="c") as writer:
            writer.record(record(0, decision="match", score=0.9))
        with db.session() as session:
            event = session.scalar(select(MatchEvent))
            assert (event.decision, event.identity_id, event.candidates[0]["name"]) == ("match", None, "ann")


def test_failed_run_is_marked(db_url):
    with Database(db_url) as db:
        with pytest.raises(RuntimeError):
            with MatchLogWriter(db, source="clip.mp4", config_hash="c") as writer:
                writer.record(record(0))
                raise RuntimeError("decoder died")
        with db.session() as session:
            assert session.get(Run, writer.run_id).status == "failed"
        assert _count(db, Track) == 1


CRASH = """
import os, sys, numpy as np
from gallery.db import Database
from gallery.matchlog import MatchLogWriter
from gallery.thumbnails import ThumbnailStore
from tests.gallery.test_matchlog import record
db = Database(sys.argv[1])
writer = MatchLogWriter(db, source="cam", config_hash="c", thumbnails=ThumbnailStore(sys.argv[2]),
batch_size=4)
for t in range(10):
    writer.record(record(t, decision="match" if t % 2 else "unknown", score=0.7))
    writer.progress(t + 1, float(t))
os._exit(9)  # killed: no close, no flush
"""


def test_crash_loses_only_the_unwritten_batch(db_url, tmp_path):
    Database(db_url).close()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH), db_url, str(tmp_path / "thumbs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr
    with Database(db_url) as db, db.session() as session:
        run = session.scalar(select(Run))
        assert (run.status, run.frames_done, run.last_timestamp) == (
            "running",
            7,
            6.0,
        )  # progress never runs ahead of the written tracks
        tracks = session.scalars(select(Track.id)).all()
        events = session.scalars(select(MatchEvent.track_pk)).all()
        assert len(tracks) == 8 and sorted(events) == sorted(
            tracks
        )  # two whole batches, every track with its event


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(decision="maybe"), "decision expected one of"),
        (dict(end_time=-1.0), "end_time >= start_time"),
        (dict(frames=0), "frames >= 1"),
        (dict(crops_embedded=11), "crops_embedded <= frames"),
        (dict(template=np.full(4, np.nan, np.float32)), "finite vector"),
        (dict(decision="match", candidates=[]), "at least one candidate"),
        (dict(at=datetime(2026, 1, 1)), "timezone-aware"),
        (dict(thumbnail=np.zeros((8, 8), np.uint8)), "BGR uint8"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(db_url, tmp_path, change, message):
    base = record(0).__dict__ | change
    with Database(db_url) as db:
        writer = MatchLogWriter(
            db, source="cam", config_hash="c", thumbnails=ThumbnailStore(tmp_path / "t"), batch_size=1
        )
        with pytest.raises(MatchLogError, match=message):
            writer.record(TrackRecord(**base))
        assert _count(db, Track) == 0
        assert not any((tmp_path / "t").rglob("*.jpg"))


def test_duplicate_track_and_bad_writer_arguments(db_url):
    with Database(db_url) as db:
        writer = MatchLogWriter(db, source="cam", config_hash="c")
        writer.record(record(5))
        with pytest.raises(MatchLogError, match="track 5 recorded twice"):
            writer.record(record(5))
        writer.close()
        with pytest.raises(MatchLogError, match="closed"):
            writer.record(record(6))
        with pytest.raises(MatchLogError, match="source kind"):
            MatchLogWriter(db, source="cam", config_hash="c", kind="drone")


def test_retention_deletes_old_events_and_thumbnails(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    with Database(db_url) as db:
        with MatchLogWriter(db, source="cam", config_hash="c", thumbnails=store) as writer:
            for t, age in enumerate([40, 31, 29, 1]):
                writer.record(record(t, at=now - timedelta(days=age)))
        assert purge_older_than(db, 30, store, now=now) == 2
        with db.session() as session:
            assert sorted(session.scalars(select(Track.track_id))) == [2, 3]
            assert _count(db, MatchEvent) == 2
        assert sorted(p.name for p in store.root.rglob("*.jpg")) == ["track2.jpg", "track3.jpg"]
        assert purge_older_than(db, 1e12, store, now=now) == 0  # older than the calendar: nothing
        for bad in (-1, float("nan")):
            with pytest.raises(MatchLogError, match="expected 0 or more days"):
                purge_older_than(db, bad, store)
        assert purge_older_than(db, 0, store, now=now) == 2  # 0: everything older than now
        assert _count(db, Track) == 0 and _count(db, MatchEvent) == 0 and not list(store.root.rglob("*.jpg"))


def test_runs_of_a_gone_process_are_interrupted_and_resumable(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        alive = MatchLogWriter(db, source="a.mp4", config_hash="h", thumbnails=store, heartbeat_s=0.1)
        dead = MatchLogWriter(db, source="b.mp4", uri="/v/b.mp4", config_hash="h", thumbnails=store)
        dead.record(record(1))
        dead.progress(30, 3.0, 2.5)
        dead.flush()
        alive.progress(5, 0.5)
        with db.session() as session:  # the owner of "b.mp4" is a pid that no longer exists
            session.execute(Run.__table__.update().where(Run.id == dead.run_id).values(owner_pid=2**22 + 7))
        orphan = store.write(
            f"source{dead.source_id}/run{dead.run_id}/track9.jpg", np.zeros((8, 8, 3), np.uint8)
        )
        assert mark_interrupted_runs(db, store) == 1
        assert not orphan.exists() and store.resolve(dead._thumb_path(1)).exists()
        with db.session() as session:
            status = dict(session.execute(select(Run.id, Run.status)).all())
        assert status == {alive.run_id: "running", dead.run_id: "interrupted"}
        point = resume_point(db, "b.mp4", "/v/b.mp4", "h")
        assert (point.run_id, point.resume_at, point.committed_at, point.logged) == (
            dead.run_id,
            2.5,
            3.0,
            ((1.0, 3.0),),
        )
        assert resume_point(db, "b.mp4", "/v/b.mp4", "other config") is None
        assert resume_point(db, "b.mp4", "/elsewhere/b.mp4", "h") is None
        alive.close()
        assert resume_point(db, "a.mp4", None, "h") is None  # finished: a re-run starts over


@pytest.mark.parametrize("queued", [0, 1])
def test_a_run_marked_interrupted_by_another_command_is_not_written_again(db_url, queued):
    with Database(db_url) as db:
        writer = MatchLogWriter(db, source="cam", kind="camera", config_hash="h", batch_size=10)
        with db.session() as s:  # another command decided the process was gone
            s.execute(update(Run).where(Run.id == writer.run_id).values(status="interrupted"))
        for track_id in range(queued):
            writer.record(record(track_id, thumb=False))
        with pytest.raises(MatchLogError, match="expected it running, got it marked interrupted"):
            writer.close()
        assert _count(db, Track) == 0
        with db.session() as s:
            assert s.scalar(select(Run.status).where(Run.id == writer.run_id)) == "interrupted"
