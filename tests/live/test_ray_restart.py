"""Restarts of the Ray engine's actors, in parts: the backoff, a dead camera's jobs retired in order, what a camera
keeps to send a new embedding service, the offset of a restarted camera's track ids, a match-log run continued by
a new writer, a service that neither loses a dead camera's open tracks nor logs a replayed track twice; then the
whole engine on a local Ray instance with a camera actor, then the embedding service, killed mid-run: the run
finishes with every track of an uninterrupted run logged once."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from gallery.db import Database
from gallery.errors import MatchLogError
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.models import MatchEvent, Run, Source, Track
from gallery.store import Gallery
from pipeline.build import build
from pipeline.config import RunnerConfig
from pipeline.live.cameras import LiveCameras
from pipeline.live.config import CameraConfig, LiveConfig, RestartConfig
from pipeline.live.health import HealthRegistry
from pipeline.live.ray_actors import EmbedService
from pipeline.live.ray_engine import run_ray
from pipeline.live.ray_supervise import Backoff, InOrder, Retained, offset_job
from pipeline.runners.engine import TrackMatching
from pipeline.runners.live_runner import LiveRunner
from pipeline.runners.tracking import RunStats, TrackJob
from pipeline.sinks.sql_gallery import LoggedSource
from stages.config import AggregateConfig
from stages.match import Matcher
from tests.conftest import require
from tests.fakes import FixedIndex
from tests.gallery.helpers import copy_sqlite, logged_tracks
from tests.live.conftest import FRIENDS
from tests.live.rtsp import make_clip, tools_missing
from tests.live.test_live_runner import NAMES, OneHotEmbedder, Recorder, crop, end
from tests.live.test_ray_engine import (  # noqa: F401 (fixture)
    RECORDED,
    embedding_early,
    local_ray,
    match_log,
    ray,
    wait_for,
)
from tests.live.test_stream_cli import app_config, gallery_db  # noqa: F401 (fixtures)


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
    tm = TrackMatching(
        SimpleNamespace(aggregate=AggregateConfig(), runner=RunnerConfig()),
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


# -- the embedding service in this process: a successor continues the runs ---------------------------------------


def handled(service, seq: int, incarnation: int = 0) -> bool:
    return wait_for(lambda: service.handled("cam", incarnation) >= seq, 30)


def test_a_new_service_continues_the_run_closes_a_dead_cameras_tracks_and_logs_none_twice(
    gallery_db,  # noqa: F811
    app_config,  # noqa: F811
    tmp_path,
):
    db = copy_sqlite(gallery_db, tmp_path, "service")
    cams = [CameraConfig(name="cam", url="rtsp://127.0.0.1:9/cam")]
    first = EmbedService(app_config, LiveConfig(), cams, db, time.monotonic())
    assert first.submit("cam", 0, 0, TrackJob([crop(1, 1.0, 0), crop(2, 1.0, 1)])) == -1
    first.submit("cam", 0, 1, TrackJob(ends=[end(1, 0.5, 1.5, [crop(1, 1.2, 0)])]))
    assert handled(first, 1)  # track 1 logged; the camera has no reply yet: it still keeps track 1
    runs = first.run_ids()
    first.worker.close()  # the service dies: nothing more is written by it
    for writer in first.log.writers.values():
        writer._beat.set()

    second = EmbedService(app_config, LiveConfig(), cams, db, time.monotonic(), continue_runs=runs)
    assert second.run_ids() == runs
    replay = TrackJob(
        [crop(1, 1.0, 0), crop(2, 1.0, 1), crop(1, 1.2, 0)], ends=[end(1, 0.5, 1.5), end(2, 0.5, 2.0)]
    )
    second.submit("cam", 0, 0, replay)  # what the camera kept: track 1 (logged) again, track 2 now ended
    second.submit("cam", 0, 1, TrackJob([crop(3, 2.5, 2)]))  # then the camera actor dies, track 3 open
    assert handled(second, 1)
    assert second.camera_lost("cam", 0, True) == 3  # its successor's ids start after 3
    second.submit("cam", 0, 2, TrackJob([crop(3, 2.6, 2)]))  # late, from the dead actor: dropped
    second.submit("cam", 1, 0, TrackJob([crop(4, 3.0, 0)], ends=[end(4, 3.0, 3.5)]))
    assert handled(second, 0, incarnation=1)
    totals = second.close()
    rows = logged_tracks(db)
    assert sorted((r[0], r[1]) for r in rows) == [("cam", 1), ("cam", 2), ("cam", 3), ("cam", 4)]
    assert next(r for r in rows if r[1] == 3)[2:5] == (2.5, 2.5, 1)  # closed at its last crop, from one crop
    assert totals["not_logged_twice"] == 1 and totals["tracks"] == 3
    with Gallery.open(db) as gallery, gallery.db.session() as s:
        assert s.execute(select(Run.id, Run.status)).all() == [(runs["cam"], "finished")]
        assert s.scalar(select(func.count()).select_from(Track)) == 4


# -- the whole engine on Ray, actors killed mid-run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip9(tmp_path_factory):
    """Nine seconds of the friends clip: two tracks end at a cut near 6 s (logged mid-run), two at the end."""
    reason = tools_missing()
    if reason:
        pytest.skip(reason)
    return make_clip(require(FRIENDS), tmp_path_factory.mktemp("clip9") / "friends_9s.mp4", seconds=9.0)


@pytest.fixture(scope="module")
def uninterrupted(clip9, gallery_db, app_config, tmp_path_factory):  # noqa: F811
    """The match log of the clip read frame by frame in one process, without any restart (crops embedded while
    tracks are open, as Ray camera actors do)."""
    early = embedding_early(app_config)
    db = copy_sqlite(gallery_db, tmp_path_factory.mktemp("uninterrupted"), "reference")
    cams = [CameraConfig(name="cam", url=str(clip9))]
    registry = HealthRegistry()
    with build(early, db_url=db) as system:
        sink = system.match_log([LoggedSource("cam", "camera", str(clip9))], batch_size=1)
        runner = LiveRunner(
            early,
            system.detector,
            system.embedder,
            system.matcher(),
            [sink],
            LiveCameras(cams, RECORDED, registry),
            registry,
        )
        stats = runner.run(threading.Event(), duration_s=120)
        sink.close()
    rows = match_log(db)
    assert len(rows) == stats.tracks >= 3 and any(r[3] < 7.0 for r in rows)  # some end mid-clip
    return stats, rows


def run_and_kill(app_config, clip9, db: str, target: str, caplog, frames: int):  # noqa: F811
    """Run the clip as a camera on Ray; once its camera has processed past the cut near 6 s (of ``frames`` in the
    whole clip: the tracks that end at the cut are sent), kill the actor whose name ends with ``target``. The
    trigger is the camera's own progress, not the match log, whose lag grows with the machine's load while the
    camera runs on. Returns the run's result, the camera's states seen after the kill and the frames processed
    at the kill."""
    live = RECORDED.model_copy(update={"restart": RestartConfig(initial_s=0.5, max_s=2.0)})
    registry, result = HealthRegistry(), {}
    thread = threading.Thread(
        target=lambda: result.update(
            run_ray(
                app_config,
                live,
                [CameraConfig(name="cam", url=str(clip9))],
                db,
                threading.Event(),
                duration_s=240,
                registry=registry,
                poll_s=0.5,
            )
        ),
        daemon=True,
    )
    states = set()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        thread.start()
        try:
            past_cut = int(frames * 6.6 / 9.0)
            assert wait_for(
                lambda: (
                    "cam" in registry.cameras
                    and registry.cameras["cam"].snapshot().frames_processed >= past_cut
                ),
                180,
            ), registry.status_line()
            at_kill = registry.cameras["cam"].snapshot().frames_processed
            name = next(n for n in ray.util.list_named_actors() if n.endswith(target))
            ray.kill(ray.get_actor(name))
            wait_for(
                lambda: states.add(registry.cameras["cam"].snapshot().state) or not thread.is_alive(), 30
            )
        finally:
            thread.join(240)
    assert not thread.is_alive() and result, caplog.text[-3000:]
    return result, states, at_kill


def assert_each_track_once_with_its_event(db: str) -> None:
    with Gallery.open(db) as gallery, gallery.db.session() as s:
        tracks = s.execute(select(Track.run_id, Track.track_id)).all()
        events = s.scalar(select(func.count()).select_from(MatchEvent))
        assert s.execute(select(Source.name, Run.status).join(Run)).all() == [("cam", "finished")]
    assert len(tracks) == len(set(tracks)) == events == len(logged_tracks(db))


@pytest.mark.slow
def test_a_killed_camera_actor_is_restarted_and_no_track_is_lost_or_logged_twice(
    local_ray,  # noqa: F811
    clip9,
    uninterrupted,
    gallery_db,  # noqa: F811
    app_config,  # noqa: F811
    tmp_path,
    caplog,
):
    stats, expected = uninterrupted
    db = copy_sqlite(gallery_db, tmp_path, "camera-kill")
    result, states, at_kill = run_and_kill(app_config, clip9, db, "/cam", caplog, stats.frames)
    assert at_kill < stats.frames and "restarting" in states
    (camera,) = result["cameras"]
    assert camera["restarts"] == 1 and camera["error"] is None and camera["failures"] >= 1  # not given up
    assert camera["frames"] >= stats.frames  # the new actor read the recorded clip again, from its start
    assert caplog.text.count("camera cam: camera actor failed: ActorDiedError") == 1
    assert caplog.text.count("restarting it in") == 1
    assert_each_track_once_with_its_event(db)
    got = match_log(db)
    # the new actor's tracks: the uninterrupted run's, with ids after every id of the dead actor
    new = got[-len(expected) :]
    offset = new[0][1] - expected[0][1]
    assert offset > 0 and [(r[0], r[1] - offset, *r[2:]) for r in new] == expected
    # the dead actor's: logged once each, before its successor's ids; those ended before the kill as uninterrupted
    old = got[: -len(expected)]
    ended = [r for r in expected if r[3] < 7.0]
    assert all(r[1] <= offset for r in old) and [r for r in old if r in ended] == ended
    # those open at the kill: closed by the service from the crops it holds (split, never lost)
    split = [r for r in old if r not in ended]
    assert len(split) <= len(expected) - len(ended) and all(r[5] >= 1 for r in split)


@pytest.mark.slow
def test_a_killed_embedding_service_is_restarted_and_no_track_is_lost_or_logged_twice(
    local_ray,  # noqa: F811
    clip9,
    uninterrupted,
    gallery_db,  # noqa: F811
    app_config,  # noqa: F811
    tmp_path,
    caplog,
):
    stats, expected = uninterrupted
    db = copy_sqlite(gallery_db, tmp_path, "service-kill")
    result, _, at_kill = run_and_kill(app_config, clip9, db, "/embed", caplog, stats.frames)
    assert at_kill < stats.frames
    assert caplog.text.count("embedding service died: ActorDiedError") == 1
    assert caplog.text.count("restarting it in") == 1 and "embedding service restarted" in caplog.text
    (camera,) = result["cameras"]
    assert camera["restarts"] == 0 and camera["error"] is None and camera["frames"] == stats.frames
    assert_each_track_once_with_its_event(db)  # the same run, continued by the new service
    assert match_log(db) == expected
