"""gallery/runs.py, one processing per file: the newest run of a file found by content, what a finished run
replaces (tracks, events, retroactive matches, thumbnails, track-index entries) and what it never touches (the runs
it continues, a run still writing, other files), on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from gallery.config import GalleryConfig, IndexConfig
from gallery.db import Database
from gallery.errors import MatchLogError
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.models import Identity, MatchEvent, Rematch, RetroMatch, Run, Track
from gallery.runs import REPLACED, logged_tracks, newest_run, replace_runs, resume_point
from gallery.thumbnails import ThumbnailStore
from gallery.track_index import TrackIndexes
from tests.gallery.helpers import unit

KEY = "c" * 64
DIM = 8


def _run(db, name, tracks, store=None, key=KEY, status="finished", indexes=None, resumed_from=None):
    """A run of file ``name`` (content ``key``) logging ``tracks`` (count) with thumbnails in ``store``; its id."""
    writer = MatchLogWriter(
        db,
        source=name,
        uri=f"/videos/{name}",
        content_key=key,
        config_hash="h",
        thumbnails=store,
        keep_thumbnails=store is not None,
        track_index=indexes,
        resumed_from=resumed_from,
    )
    vectors = unit(np.random.default_rng(writer.run_id), max(tracks, 1), DIM)
    crop = np.full((8, 8, 3), 128, np.uint8)
    for i in range(tracks):
        rec = TrackRecord(
            i + 1, float(i), i + 1.0, 5, 1, vectors[i], "e8", [], "unknown", 0.5, thumbnail=crop
        )
        writer.record(rec)
    writer.flush()
    if status != "running":
        writer.close("finished")
    if status == "interrupted":
        with db.session() as session:
            session.get(Run, writer.run_id).status = "interrupted"
    return writer.run_id if status != "running" else writer


def _counts(db, run_ids) -> dict[str, int]:
    with db.session() as session:
        tracks = select(Track.id).where(Track.run_id.in_(run_ids))
        return {
            "tracks": session.scalar(select(func.count()).select_from(tracks.subquery())),
            "events": session.scalar(select(func.count()).where(MatchEvent.track_pk.in_(tracks))),
            "retro": session.scalar(select(func.count()).where(RetroMatch.track_pk.in_(tracks))),
        }


def _retro(db, run_id) -> None:
    """A retroactive match of the first track of ``run_id``."""
    with db.session() as session:
        who = Identity(name=f"person{run_id}")
        session.add(who)
        rematch = Rematch(cause="rematch", embedder_id="e8", threshold=0.3, gallery_version=1)
        session.add(rematch)
        session.flush()
        track = session.scalar(select(Track).where(Track.run_id == run_id, Track.track_id == 1))
        row = {"track_pk": track.id, "source_id": track.source_id, "identity_id": who.id}
        row |= {"rematch_id": rematch.id, "score": 0.9, "threshold": 0.3, "candidates": []}
        session.execute(insert(RetroMatch), [row])


def test_a_finished_run_replaces_the_other_runs_of_its_file(db_url, tmp_path):
    config = GalleryConfig(storage_dir=str(tmp_path / "store"), index=IndexConfig(gpu=False))
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        indexes = TrackIndexes(db, config)
        old = _run(db, "a.mp4", 3, store, indexes=indexes)
        _retro(db, old)
        again = _run(db, "a.mp4", 1, store)  # a second finished run of it
        other_file = _run(db, "b.mp4", 2, store, key="d" * 64)
        cut = _run(db, "copy.mp4", 2, store, status="interrupted")  # the same content under another name
        new = _run(db, "copy.mp4", 2, store, resumed_from=cut, indexes=indexes)  # it continues `cut`
        writing = _run(db, "a.mp4", 1, store, status="running")  # another process is on it right now
        assert indexes.get("e8").live == 3 + 1 + 2 + 2 + 2 + 1
        before = sorted(p.relative_to(store.root) for p in store.root.rglob("*.jpg"))

        assert replace_runs(db, new, store, indexes) == sorted([old, again])
        with db.session() as session:
            status = dict(session.execute(select(Run.id, Run.status)).all())
        assert status[old] == status[again] == REPLACED
        assert (status[cut], status[new], status[other_file]) == ("interrupted", "finished", "finished")
        assert status[writing.run_id] == "running"
        assert _counts(db, [old, again]) == {"tracks": 0, "events": 0, "retro": 0}
        assert _counts(db, [cut, new, other_file, writing.run_id])["tracks"] == 2 + 2 + 2 + 1
        after = sorted(p.relative_to(store.root) for p in store.root.rglob("*.jpg"))
        assert [p for p in before if p not in after] == [
            p for p in before if p.parts[1] in (f"run{old}", f"run{again}")
        ]
        assert not (store.root / before[0].parts[0] / f"run{old}").exists()  # its folder too
        assert indexes.get("e8").live == 2 + 2 + 2 + 1  # the index was told

        assert replace_runs(db, new, store, indexes) == []  # again: nothing left to replace
        with pytest.raises(MatchLogError, match="expected a finished run"):
            replace_runs(db, writing.run_id, store)
        writing.close()
        assert replace_runs(db, writing.run_id, store) == sorted([cut, new])  # the newest finished one wins
        assert replace_runs(db, new, store) == []  # replaced meanwhile: it does nothing


def test_the_newest_run_of_a_file_by_content_and_its_tracks(db_url):
    with Database(db_url) as db:
        assert newest_run(db, "a.mp4", "/videos/a.mp4", KEY) is None
        first = _run(db, "a.mp4", 2, status="interrupted")
        point = resume_point(db, "renamed.mp4", "/elsewhere/renamed.mp4", "h", KEY)  # found by content
        assert point is not None and point.run_id == first
        second = _run(db, "renamed.mp4", 1, resumed_from=first)
        run = newest_run(db, "renamed.mp4", "/elsewhere/renamed.mp4", KEY)
        assert (run.run_id, run.status, run.source, run.chain, run.tracks) == (
            second,
            "finished",
            "a.mp4",  # its name stays the first path it was logged under
            (second, first),
            3,
        )
        assert run.path == "/videos/renamed.mp4" and run.finished_at is not None
        tracks = logged_tracks(db, run.chain)
        assert [(t.run_id, t.track_id) for t in tracks] == [(first, 1), (second, 1), (first, 2)]
        assert all(t.decision == "unknown" and t.template.shape == (DIM,) for t in tracks)
        assert resume_point(db, "a.mp4", "/videos/a.mp4", "h", KEY) is None  # finished: nothing to resume
        assert newest_run(db, "a.mp4", "/videos/a.mp4", "e" * 64) is None  # other content at that path
