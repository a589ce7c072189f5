"""The Ray engine against the single-process live runner: two recorded cameras processed frame by frame on
a local Ray instance started by the test give the same match log."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from gallery.models import Identity, MatchEvent, Run, Source, Track
from gallery.store import Gallery
from pipeline.health import HealthRegistry
from pipeline.live import LiveCameras
from pipeline.live_config import CameraConfig, LiveConfig, ReconnectConfig
from pipeline.live_runner import LiveRunner
from pipeline.stream_cli import MatchLogSink, SqlGalleryIndex
from stages.detect import FaceDetector
from stages.embed import build_embedder
from stages.match import Matcher
from tests.conftest import ROOT
from tests.live.test_stream_cli import CONFIG, app_config, gallery_db  # noqa: F401 (fixtures)

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray package (pip install 'ray[default]')")

from pipeline.ray_engine import run_ray

# every frame of the clip, in order, with the stream's own timestamps: the same input for both engines
RECORDED = LiveConfig(buffer_frames=8, drop_frames=False, timestamps="stream",
                      reconnect=ReconnectConfig(max_attempts=1))


def copy_db(url: str, tmp_path, name: str) -> str:
    dst = tmp_path / f"{name}.db"
    shutil.copy(url.removeprefix("sqlite:///"), dst)
    return f"sqlite:///{dst}"


def match_log(url: str) -> list[tuple]:
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        rows = s.execute(select(Source.name, Track.track_id, Track.start_time, Track.end_time, Track.frames,
                                Track.crops_embedded, MatchEvent.decision, Identity.name, MatchEvent.score)
                         .join(Source, Track.source_id == Source.id).join(MatchEvent, MatchEvent.track_pk == Track.id)
                         .outerjoin(Identity, MatchEvent.identity_id == Identity.id)).all()
    return sorted((r[0], r[1], round(r[2], 3), round(r[3], 3), r[4], r[5], r[6], r[7],
                   None if r[8] is None else round(r[8], 3)) for r in rows)


@pytest.mark.slow
def test_ray_run_gives_the_single_process_match_log(stream_clip, gallery_db, app_config, tmp_path):  # noqa: F811
    cams = [CameraConfig(name="left", url=str(stream_clip)), CameraConfig(name="right", url=str(stream_clip))]
    local_db, ray_db = copy_db(gallery_db, tmp_path, "local"), copy_db(gallery_db, tmp_path, "ray")

    embedder = build_embedder(app_config.embed)
    registry = HealthRegistry()
    with Gallery.open(local_db) as gallery:
        sink = MatchLogSink(gallery, cams, embedder.embedder_id, "cmp")
        matcher = Matcher(app_config.match, SqlGalleryIndex(gallery, embedder.embedder_id))
        runner = LiveRunner(app_config, FaceDetector(app_config.detect), embedder, matcher, [sink],
                            LiveCameras(cams, RECORDED, registry), registry)
        local = runner.run(threading.Event(), duration_s=120)
        sink.close()

    result = run_ray(app_config, RECORDED, cams, ray_db, "cmp", threading.Event(), duration_s=120)

    expected, got = match_log(local_db), match_log(ray_db)
    assert local.tracks > 0 and {r[0] for r in expected} == {"left", "right"}
    assert [r[1:] for r in expected if r[0] == "left"] == [r[1:] for r in expected if r[0] == "right"]
    assert got == expected
    assert result["tracks"] == local.tracks
    assert sorted(c["frames"] for c in result["cameras"]) == [local.frames // 2] * 2


@pytest.mark.slow
def test_stream_on_ray_stops_cleanly_on_sigterm(rtsp_server, stream_clip, gallery_db, tmp_path):  # noqa: F811
    rtsp_server.publish("a", stream_clip)
    db = copy_db(gallery_db, tmp_path, "sigterm")
    live = tmp_path / "live.yaml"
    live.write_text("transport: udp\n")
    proc = subprocess.Popen(
        [sys.executable, "run_pipeline.py", "stream", "--engine", "ray", rtsp_server.url("a"), "--db", db,
         "--config", str(CONFIG), "--live-config", str(live)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not runs(db):
            time.sleep(1.0)  # until the embedding service has opened the match log
        time.sleep(8.0)  # the camera actor attaches and tracks faces
        proc.send_signal(signal.SIGTERM)  # ray.init installs handlers of its own: ours must win
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert runs(db) == [("cam0-a", "finished")]
    assert match_log(db)  # the tracks open at the signal were finished and logged


def runs(url: str) -> list[tuple]:
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        return s.execute(select(Source.name, Run.status).join(Run).where(Source.name == "cam0-a")).all()
