"""Camera zones on real RTSP streams of the friends clip: a privacy mask over a face hides it from the real SCRFD
detector (the frame is blacked out before anything sees it); logged tracks carry the zones they entered (match log,
query rows, alerts); alerts limited to zones are sent only for tracks that entered one; the camera config refuses
bad zones."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pydantic import ValidationError

from core.types import Candidate, MatchResult, TrackTemplate
from gallery.queries import Filters, find_matches, find_tracks
from gallery.store import Gallery
from pipeline.build import build
from pipeline.live.cameras import LiveCameras, LiveSource
from pipeline.live.config import AlertConfig, CameraConfig, LiveConfig, WebhookConfig, load_cameras
from pipeline.live.health import CameraHealth, HealthRegistry
from pipeline.runners.live_runner import LiveRunner
from pipeline.sinks.alerts import WatchlistAlerts
from pipeline.sinks.sql_gallery import LoggedSource
from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.zones import ZoneConfig, Zones
from tests.conftest import ASSETS, require
from tests.live.test_alerts import Receiver
from tests.live.test_live import drain, live_config, wait_until
from tests.live.test_stream_cli import FRIENDS, app_config, gallery_db  # noqa: F401 (fixtures)

SCRFD_25G = ASSETS / "models" / "scrfd_2.5g_bnkps.onnx"
# the friends clip's first seconds: one face about (0.34, 0.29) of the frame, another about (0.70, 0.35) moving
# within x 0.66-0.72, y 0.27-0.38; the mask covers the right half of the frame
RIGHT = ZoneConfig(name="right", points=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), mask=True)
LEFT = ZoneConfig(name="left", points=((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))


@pytest.fixture(scope="module")
def scrfd() -> FaceDetector:
    return FaceDetector(DetectConfig(model=str(require(SCRFD_25G)), threads=1, tiling="off"))


def face_centres(detector: FaceDetector, frames) -> np.ndarray:
    """Centres ``[N, 2]`` of every face found in ``frames``, as fractions of the frame."""
    centres = []
    for start in range(0, len(frames), 4):
        batch = [f.image for f in frames[start : start + 4]]
        for image, dets in zip(batch, detector.detect(batch)):
            h, w = image.shape[:2]
            xy = (dets.xyxy[:, :2] + dets.xyxy[:, 2:]) / 2 / np.array([w, h], np.float32)
            centres.append(xy)
    return np.concatenate(centres) if centres else np.zeros((0, 2), np.float32)


def frames_of(camera: CameraConfig, seconds: float = 3.0) -> list:
    health = CameraHealth(camera.name)
    src = LiveSource(camera, live_config(), health).start()
    try:
        assert wait_until(lambda: health.frames_in > 0, 20), health.snapshot()
        frames = drain(src, seconds)
    finally:
        src.stop()
        assert src.join(5)
    return frames[::3]


def test_no_face_is_detected_inside_a_privacy_mask(rtsp_server, stream_clip, scrfd):
    rtsp_server.publish("cam", stream_clip)
    plain = frames_of(CameraConfig(name="plain", url=rtsp_server.url("cam")))
    masked = frames_of(CameraConfig(name="masked", url=rtsp_server.url("cam"), zones=(LEFT, RIGHT)))
    assert len(plain) >= 10 and len(masked) >= 10
    seen, hidden = face_centres(scrfd, plain), face_centres(scrfd, masked)
    in_mask = Zones([RIGHT]).inside
    # unmasked, the detector finds the face on the right in most frames, and the one on the left
    assert in_mask(seen * [640, 360], 360, 640)[:, 0].sum() >= 0.8 * len(plain)
    assert (seen[:, 0] < 0.5).sum() >= 0.8 * len(plain)
    # masked: nothing in the mask, the face on the left still found
    assert not in_mask(hidden * [640, 360], 360, 640).any()
    assert (hidden[:, 0] < 0.5).sum() >= 0.8 * len(masked)
    for (
        frame
    ) in masked:  # the frames themselves are black there: what is made from them (crops, snapshots) too
        assert not frame.image[:, 320:].any() and frame.image[:, :320].any()


def test_zones_in_a_cameras_file_and_their_refusals(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text(
        "cameras:\n  - name: lobby\n    url: rtsp://127.0.0.1/lobby\n    zones:\n"
        "      - {name: door, points: [[0, 0], [0.5, 0], [0.5, 1]]}\n"
        "      - {name: desk, points: [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]], mask: true}\n"
    )
    (cam,) = load_cameras(path)
    assert [(z.name, z.mask) for z in cam.zones] == [("door", False), ("desk", True)]
    assert cam.zones[0].points == ((0, 0), (0.5, 0), (0.5, 1))
    assert LiveConfig().cameras == () and CameraConfig(url="rtsp://x/y").zones == ()
    with pytest.raises(ValidationError, match="unique per camera"):
        CameraConfig(url="rtsp://x/y", zones=(LEFT, LEFT.model_copy(update={"mask": True})))
    with pytest.raises(ValidationError, match="fractions"):
        CameraConfig(url="rtsp://x/y", zones=({"name": "far", "points": [[0, 0], [640, 0], [0, 360]]},))
    with pytest.raises(ValidationError, match="extra"):
        CameraConfig(url="rtsp://x/y", zones=({"name": "z", "points": [[0, 0], [1, 0], [0, 1]], "blur": 1},))
    assert AlertConfig(zones=("door",)).zones == ("door",) and AlertConfig().zones == ()


def template(zones, track_id: int = 1) -> tuple[TrackTemplate, MatchResult]:
    t = TrackTemplate("cam", track_id, np.ones(4, np.float32) / 2, 1.0, 3, None, 1.0, 2.5, 10, zones=zones)
    return t, MatchResult("cam", track_id, (Candidate(7, "Joey", 0.6),), "match", 0.3)


@pytest.mark.parametrize(
    ("limit", "zones", "alerted"),
    [
        ((), None, True),
        ((), ("left",), True),
        (("left",), ("left", "right"), True),
        (("left", "desk"), ("desk",), True),
        (("left",), ("right",), False),
        (("left",), (), False),
        (("left",), None, False),
    ],
)
def test_alerts_limited_to_zones_need_a_track_that_entered_one(limit, zones, alerted):
    alerts = WatchlistAlerts(AlertConfig(watchlist=("Joey",), zones=limit, log=False))
    sent = []
    alerts.webhooks = [type("Hook", (), {"submit": staticmethod(sent.append)})()]
    alerts.on_track(*template(zones))
    assert [b["zones"] for b in sent] == ([None if zones is None else list(zones)] if alerted else [])
    assert alerts.raised == int(alerted)


def test_alerts_limited_to_zones_wait_for_the_track_to_end():
    alerts = WatchlistAlerts(AlertConfig(watchlist=("Joey",), zones=("left",), log=False))
    assert not alerts.watching  # open tracks are not matched for it: what they entered is known at their end
    alerts.on_progress(*template(None))
    assert alerts.raised == 0
    alerts.on_track(*template(("left",)))
    assert alerts.raised == 1


@pytest.mark.slow
def test_tracks_carry_their_zones_and_alerts_keep_to_theirs(
    rtsp_server,
    stream_clip,
    gallery_db,  # noqa: F811 (fixture)
    app_config,  # noqa: F811 (fixture)
):
    rtsp_server.publish("cam", stream_clip)
    zones = (
        LEFT,
        ZoneConfig(name="right", points=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))),
        ZoneConfig(name="floor", points=((0.0, 0.85), (1.0, 0.85), (1.0, 1.0), (0.0, 1.0))),  # nobody's face
    )
    cams = [CameraConfig(name="lobby", url=rtsp_server.url("cam"), zones=zones)]
    registry = HealthRegistry()
    cameras = LiveCameras(cams, LiveConfig(transport="udp", read_timeout_s=2.0), registry, seed=0)
    left_hook, floor_hook = Receiver(), Receiver()
    watch = tuple(sorted(FRIENDS))
    on_left = WatchlistAlerts(
        AlertConfig(watchlist=watch, zones=("left",), webhooks=(WebhookConfig(url=left_hook.url),))
    )
    on_floor = WatchlistAlerts(
        AlertConfig(watchlist=watch, zones=("floor",), webhooks=(WebhookConfig(url=floor_hook.url),))
    )
    with build(app_config, db_url=gallery_db) as system:
        log = system.match_log([LoggedSource(c.name, "camera", c.url) for c in cams], batch_size=1)
        on_left.run_ids = on_floor.run_ids = log.run_ids
        runner = LiveRunner(
            app_config,
            system.detector,
            system.embedder,
            system.matcher(),
            [on_left, on_floor, log],
            cameras,
            registry,
        )
        try:
            stats = runner.run(threading.Event(), duration_s=10)
        finally:
            for sink in (on_left, on_floor, log):
                sink.close()
            left_hook.close()
            floor_hook.close()
    assert stats.tracks >= 2
    with Gallery.open(gallery_db) as gallery:
        tracks = [r for r in find_tracks(gallery.db, Filters(source="lobby", page_size=500)).rows]
        matches = [r for r in find_matches(gallery.db, Filters(source="lobby", page_size=500)).rows]
    assert len(tracks) == stats.tracks
    entered = [tuple(r["zones"]) for r in tracks]
    # the two faces: one on the left half, one on the right; none on the floor
    assert ("left",) in entered and ("right",) in entered, entered
    assert all(set(z) <= {"left", "right"} and z for z in entered), entered
    assert sorted(tuple(r["zones"]) for r in matches) == sorted(entered)
    assert floor_hook.bodies == [] and on_floor.raised == 0
    matched_left = {
        (r["ref"], r["identity"])
        for r in tracks
        if r["decision"] == "match" and "left" in r["zones"] and r["identity"] in FRIENDS
    }
    assert {(b["ref"], b["identity"]) for b in left_hook.bodies} == matched_left
    assert all("left" in b["zones"] and b["track_ended"] for b in left_hook.bodies)
