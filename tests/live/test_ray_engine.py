"""The Ray engine on a local Ray instance started by the test: two recorded cameras processed frame by frame
give the single-process match log; a camera actor killed mid-run with restarts off has its run marked failed
while the other camera goes on (restarts: ``test_ray_restart.py``); the driver serves the actors' health as
metrics; SIGTERM stops the command cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.models import Run, Source, Track
from gallery.store import Gallery
from gallery.thumbnails import ThumbnailStore
from gallery.track_boxes import unpack_boxes
from pipeline.build import build
from pipeline.live.cameras import LiveCameras
from pipeline.live.config import CameraConfig, LiveConfig, ReconnectConfig, RestartConfig
from pipeline.live.health import HealthRegistry
from pipeline.runners.live_runner import LiveRunner
from pipeline.runners.tracking import TrackJob
from pipeline.sinks.sql_gallery import LoggedSource
from tests.conftest import ROOT
from tests.gallery.helpers import copy_sqlite, logged_tracks
from tests.live.rtsp import free_port
from tests.live.test_stream_cli import CONFIG, app_config, gallery_db  # noqa: F401 (fixtures)

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray package (pip install 'ray[default]')")

from pipeline.live.ray_engine import InOrder, run_ray  # noqa: E402 (after the skip)

# every frame of the clip, in order, with the stream's own timestamps: the same input for both engines
RECORDED = LiveConfig(
    buffer_frames=8, drop_frames=False, timestamps="stream", reconnect=ReconnectConfig(max_attempts=1)
)


def match_log(url: str) -> list[tuple]:
    rows = logged_tracks(url)
    return sorted(
        (
            r[0],
            r[1],
            round(r[2], 3),
            round(r[3], 3),
            r[4],
            r[5],
            r[6],
            r[7],
            None if r[8] is None else round(r[8], 3),
        )
        for r in rows
    )


def evidence(url: str) -> list[tuple]:
    """(camera, track, box rows, whether its context snapshot is stored) of every logged track."""
    with Database(url, create=False) as db, db.session() as session:
        store = ThumbnailStore.for_database(db, GalleryConfig())
        rows = session.execute(select(Source.name, Track.track_id, Track.boxes, Track.snapshot).join(Source))
        return sorted(
            (
                name,
                track,
                unpack_boxes(boxes).round(2).tolist(),
                snap is not None and store.resolve(snap).is_file(),
            )
            for name, track, boxes, snap in rows.all()
        )


def embedding_early(cfg):
    """``cfg`` with crops embedded while tracks are open, as Ray camera actors do (a single-process run to compare
    with a Ray run needs it)."""
    return cfg.model_copy(update={"runner": cfg.runner.model_copy(update={"embed_early": True})})


@pytest.mark.slow
def test_ray_run_gives_the_single_process_match_log(stream_clip, gallery_db, app_config, tmp_path):  # noqa: F811
    cams = [CameraConfig(name="left", url=str(stream_clip)), CameraConfig(name="right", url=str(stream_clip))]
    local_db, ray_db = copy_sqlite(gallery_db, tmp_path, "local"), copy_sqlite(gallery_db, tmp_path, "ray")
    app_config = embedding_early(app_config)

    registry = HealthRegistry()
    with build(app_config, db_url=local_db) as system:
        sink = system.match_log([LoggedSource(c.name, "camera", c.url) for c in cams], batch_size=1)
        runner = LiveRunner(
            app_config,
            system.detector,
            system.embedder,
            system.matcher(),
            [sink],
            LiveCameras(cams, RECORDED, registry),
            registry,
        )
        local = runner.run(threading.Event(), duration_s=120)
        sink.close()

    result = run_ray(app_config, RECORDED, cams, ray_db, threading.Event(), duration_s=120)

    expected, got = match_log(local_db), match_log(ray_db)
    assert local.tracks > 0 and {r[0] for r in expected} == {"left", "right"}
    assert [r[1:] for r in expected if r[0] == "left"] == [r[1:] for r in expected if r[0] == "right"]
    assert got == expected
    assert evidence(ray_db) == evidence(local_db)  # boxes and snapshots come through the camera actors
    assert all(snap and boxes for *_, boxes, snap in evidence(ray_db))
    assert result["tracks"] == local.tracks
    assert sorted(c["frames"] for c in result["cameras"]) == [local.frames // 2] * 2


@pytest.mark.slow
def test_stream_on_ray_stops_cleanly_on_sigterm(rtsp_server, stream_clip, gallery_db, tmp_path):  # noqa: F811
    rtsp_server.publish("a", stream_clip)
    db = copy_sqlite(gallery_db, tmp_path, "sigterm")
    live = tmp_path / "live.yaml"
    live.write_text("transport: udp\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "run_pipeline.py",
            "stream",
            "--engine",
            "ray",
            rtsp_server.url("a"),
            "--db",
            db,
            "--config",
            str(CONFIG),
            "--live-config",
            str(live),
            "--metrics-port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = ""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not runs(db):
            time.sleep(1.0)  # until the embedding service has opened the match log
        while (
            time.monotonic() < deadline and proc.poll() is None and 'connected{camera="a"} 1' not in metrics
        ):
            time.sleep(1.0)  # the driver serves the camera actor's polled health
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
        time.sleep(6.0)  # the camera actor tracks faces
        processed = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        proc.send_signal(signal.SIGTERM)  # ray.init installs handlers of its own: ours must win
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert 'facemoe_camera_connected{camera="a"} 1' in metrics
    assert metric(processed, "facemoe_camera_frames_processed_total", "a") > 20
    assert runs(db) == [("a", "finished")]
    assert match_log(db)  # the tracks open at the signal were finished and logged


def metric(text: str, name: str, camera: str) -> float:
    prefix = f'{name}{{camera="{camera}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


@pytest.fixture
def local_ray():
    """A local Ray instance of the test (``run_ray`` then uses it and leaves it running)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_killed_camera_actor_without_restarts_fails_its_run_and_the_other_camera_goes_on(
    local_ray,
    rtsp_server,
    stream_clip,
    gallery_db,  # noqa: F811
    app_config,  # noqa: F811
    tmp_path,
):
    for mount in ("l", "r"):
        rtsp_server.publish(mount, stream_clip)
    db = copy_sqlite(gallery_db, tmp_path, "crash")
    cams = [
        CameraConfig(name="left", url=rtsp_server.url("l")),
        CameraConfig(name="right", url=rtsp_server.url("r")),
    ]
    live = LiveConfig(transport="udp", read_timeout_s=2.0, restart=RestartConfig(max_restarts=0))
    registry = HealthRegistry()
    stop = threading.Event()
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            run_ray(app_config, live, cams, db, stop, registry=registry, poll_s=0.5)
        ),
        daemon=True,
    )
    thread.start()
    left, right = (
        (lambda: registry.cameras["left"].snapshot()),
        (lambda: registry.cameras["right"].snapshot()),
    )
    try:
        assert wait_for(
            lambda: (
                "left" in registry.cameras and left().frames_processed > 20 and right().frames_processed > 20
            ),
            120,
        ), registry.status_line()
        text = registry.prometheus_text()  # the driver's view of both actors
        assert metric(text, "facemoe_camera_connected", "left") == 1
        assert metric(text, "facemoe_camera_connected", "right") == 1
        assert metric(text, "facemoe_camera_frames_in_total", "right") >= right().frames_processed > 0
        time.sleep(4.0)  # tracks are sent from both cameras
        name = next(n for n in ray.util.list_named_actors() if n.endswith("/left"))
        ray.kill(ray.get_actor(name))
        assert wait_for(lambda: dict(camera_runs(db)).get("left") == "failed", 30), camera_runs(db)
        assert dict(camera_runs(db))["right"] == "running" and left().state == "failed"
        at_kill = right().frames_processed
        assert wait_for(lambda: right().frames_processed > at_kill + 20, 20)  # the other camera goes on
        assert right().state == "connected" and "left: failed" in registry.status_line()
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive() and result
    assert dict(camera_runs(db)) == {"left": "failed", "right": "finished"}
    states = {c["camera"]: (c["state"], c["error"]) for c in result["cameras"]}
    assert states["left"][0] == "failed" and "ActorDiedError" in states["left"][1]
    assert states["right"] == ("stopped", None)
    logged = {r[0] for r in match_log(db)}
    assert "right" in logged  # the surviving camera's tracks, finished at the stop
    assert result["tracks"] >= len(match_log(db))


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def camera_runs(url: str) -> list[tuple]:
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        return s.execute(select(Source.name, Run.status).join(Run)).all()


def runs(url: str) -> list[tuple]:
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        return s.execute(select(Source.name, Run.status).join(Run).where(Source.name == "a")).all()


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2], [2, 0, 3, 1]])
def test_jobs_are_queued_in_the_cameras_order_whatever_order_they_arrive_in(order):
    queued = []
    jobs = {(cam, i): TrackJob(after=lambda: None) for cam in ("a", "b") for i in range(4)}
    sink = InOrder(queued.append)
    threads = [
        threading.Thread(target=sink.submit, args=(cam, i, jobs[cam, i])) for i in order for cam in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    for cam in ("a", "b"):
        assert [q for q in queued if any(q is jobs[cam, i] for i in range(4))] == [
            jobs[cam, i] for i in range(4)
        ]
    with pytest.raises(ValueError, match="job 2 expected once"):
        sink.submit("a", 2, TrackJob())
