"""Restarts of the Ray engine's actors, in parts: the backoff, a dead camera's jobs retired in order, what a camera
keeps to send a new embedding service, the offset of a restarted camera's track ids, a match-log run continued by
a new writer, and a service that neither loses a dead camera's open tracks nor logs a replayed track twice. The
whole engine with actors killed mid-run is in ``test_ray_kill.py``."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from gallery.db import Database
from gallery.errors import MatchLogError
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.models import Run, Track
from pipeline.engine import RunStats, TrackJob
from pipeline.live_config import LiveConfig, RestartConfig
from pipeline.ray_supervise import Backoff, InOrder, OnceMatching, Retained, offset_job
from stages.config import AggregateConfig
from stages.match import Matcher
from tests.fakes import FixedIndex
from tests.live.test_live_runner import NAMES, OneHotEmbedder, Recorder, crop, end


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_restart_waits_grow_to_the_cap_and_the_budget_refills_after_the_window():
    clock = Clock()
    backoff = Backoff(RestartConfig(max_restarts=4, window_s=60, initial_s=1, max_s=5), clock)
    waits = []
    for _ in range(4):
        waits.append(backoff.next_wait())
        clock.now += 1
    assert waits == [1, 2, 4, 5] and backoff.restarts == 4
    assert backoff.next_wait() is None  # four within the window: given up
    clock.now += 60  # the first ones left the window
    assert backoff.next_wait() == 1 and backoff.restarts == 5
    assert Backoff(RestartConfig(max_restarts=0), clock).next_wait() is None


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"max_restarts": -1}, "max_restarts"),
        ({"initial_s": 5, "max_s": 1}, "max_s must be >= initial_s"),
        ({"window_s": 0}, "window_s"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_restart_settings_are_refused(kw, fragment):
    with pytest.raises(ValidationError, match=fragment):
        LiveConfig(restart=kw)


def test_a_retired_camera_gives_its_held_jobs_in_order_and_drops_late_ones():
    queued = []
    order = InOrder(queued.append)
    jobs = [TrackJob(after=lambda: None) for _ in range(5)]
    assert order.submit("cam#0", 0, jobs[0])
    assert order.submit("cam#0", 3, jobs[3]) and order.submit("cam#0", 2, jobs[2])  # job 1 never comes
    assert queued == [jobs[0]]
    assert order.retire("cam#0") == [jobs[2], jobs[3]]
    assert not order.submit("cam#0", 4, jobs[4]) and queued == [jobs[0]]  # late: dropped
    assert order.submit("cam#1", 0, jobs[1]) and queued == [jobs[0], jobs[1]]  # the successor starts at 0


def test_a_camera_keeps_open_tracks_and_unhandled_ends_for_a_new_service():
    kept = Retained()
    kept.sent(0, TrackJob([crop(1, 1.0, 0), crop(2, 1.0, 1)]))
    kept.sent(1, TrackJob([crop(1, 2.0, 0)], ends=[end(1, 0.5, 2.5, [crop(1, 1.5, 0)])]))
    kept.sent(2, TrackJob([crop(3, 3.0, 2)]))
    assert kept.counts() == (2, 2, 1)  # tracks 2 and 3 open, track 1 ended in job 1
    kept.handled(0)
    assert kept.counts() == (2, 2, 1)
    job = kept.replay()
    assert [(c.track_id, c.timestamp) for c, _ in job.crops] == [(1, 1.0), (1, 2.0), (2, 1.0), (3, 3.0)]
    assert [e.end.track_id for e in job.ends] == [1] and kept.counts() == (0, 0, 0)
    kept.sent(0, job)  # to the new service, numbered from 0 again
    assert kept.counts() == (2, 2, 1)
    kept.handled(0)
    assert kept.counts() == (2, 2, 0) and set(kept.open) == {2, 3}


def test_a_restarted_cameras_track_ids_follow_the_runs():
    job = TrackJob([crop(1, 1.0, 0)], ends=[end(2, 0.5, 2.0, [crop(2, 1.5, 1)])])
    moved = offset_job(job, 40)
    assert [c.track_id for c, _ in moved.crops] == [41] and moved.ends[0].end.track_id == 42
    assert moved.ends[0].pooled[0][0].track_id == 42 and moved.ends[0].source_id == "cam"
    assert job.crops[0][0].track_id == 1 and job.ends[0].end.track_id == 2  # the camera's own copy unchanged
    assert offset_job(job, 0) is job


def record(writer: MatchLogWriter, track_id: int) -> None:
    writer.record(TrackRecord(track_id, 1.0, 2.0, 5, 2, np.ones(4, np.float32) / 2, "e4", [], "unknown", 0.5))


def test_a_new_writer_continues_a_run_and_refuses_its_logged_tracks(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    first = MatchLogWriter(
        db, source="gate", kind="camera", config_hash="h", keep_thumbnails=False, batch_size=1
    )
    record(first, 1)
    record(first, 4)
    first._beat.set()  # its process died: no close
    second = MatchLogWriter(
        db,
        source="gate",
        kind="camera",
        config_hash="h",
        keep_thumbnails=False,
        batch_size=1,
        continue_run=first.run_id,
    )
    assert second.run_id == first.run_id and second.logged(4) and not second.logged(2)
    assert second.top_track_id == 4
    with pytest.raises(MatchLogError, match="track 4 recorded twice"):
        record(second, 4)
    record(second, 5)
    second.close()
    with db.session() as s:
        assert s.scalars(select(Track.track_id).where(Track.run_id == first.run_id)).all() == [1, 4, 5]
        assert s.scalars(select(Run.status)).all() == ["finished"]
    with pytest.raises(MatchLogError, match="expected it running or interrupted, got finished"):
        MatchLogWriter(db, source="gate", config_hash="h", keep_thumbnails=False, continue_run=first.run_id)
    with pytest.raises(MatchLogError, match="continue_run"):
        MatchLogWriter(
            db, source="gate", config_hash="other", keep_thumbnails=False, continue_run=first.run_id
        )


def once_matching(logged: set):
    gallery = FixedIndex(NAMES, np.eye(4, dtype=np.float32)[:3], 0.8)
    log = Recorder()
    tm = OnceMatching(
        SimpleNamespace(aggregate=AggregateConfig()),
        OneHotEmbedder(),
        Matcher(SimpleNamespace(threshold=None, top_k=3), gallery),
        [log],
        lambda: 0.0,
        logged=lambda source, track: (source, track) in logged,
    )
    return tm, log


def test_a_dead_cameras_open_tracks_are_closed_once_from_their_crops():
    tm, log = once_matching(set())
    stats = RunStats()
    tm.handle([TrackJob([crop(1, 1.0, 0), crop(1, 2.0, 0), crop(2, 1.5, 2), crop(9, 3.0, 1)])], stats)
    tm.handle([TrackJob([crop(1, 1.0, 1, source="other")])], stats)
    assert tm.close_source("cam", 5, stats) == 2  # track 9 is the restarted actor's
    got = {
        t.track_id: (t.first_timestamp, t.last_timestamp, t.num_crops, r.identity.name) for t, r in log.tracks
    }
    assert got == {1: (1.0, 2.0, 2, "Joey"), 2: (1.5, 1.5, 1, "Monica")}
    assert stats.tracks == 2 and stats.closed_at_loss == 2 and tm.close_source("cam", 5, stats) == 0
    assert {k for k in tm._span} == {("cam", 9), ("other", 1)}  # the others stay open


def test_a_replayed_track_already_logged_is_not_delivered_again():
    tm, log = once_matching({("cam", 1)})
    stats = RunStats()
    tm.handle(
        [TrackJob([crop(1, 1.0, 0), crop(2, 1.0, 2)], ends=[end(1, 0.5, 1.0), end(2, 0.5, 1.0)])], stats
    )
    assert [t.track_id for t, _ in log.tracks] == [2] and tm.skipped == 1 and stats.tracks == 1
    assert not tm._span  # the skipped track's state is gone too


def test_jobs_of_many_cameras_wait_for_their_turn_across_threads():
    queued = []
    order = InOrder(queued.append)
    jobs = {(c, i): TrackJob(after=lambda: None) for c in ("a#0", "b#0") for i in range(20)}
    threads = [threading.Thread(target=order.submit, args=(c, i, j)) for (c, i), j in reversed(jobs.items())]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    for c in ("a#0", "b#0"):
        assert [q for q in queued if any(q is jobs[c, i] for i in range(20))] == [
            jobs[c, i] for i in range(20)
        ]
