"""Camera zones on real RTSP streams of the friends clip: a privacy mask over a face hides it from the real SCRFD
detector (the frame is blacked out before anything sees it), and the camera config refuses bad zones."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.health import CameraHealth
from pipeline.live import LiveSource
from pipeline.live_config import AlertConfig, CameraConfig, LiveConfig, load_cameras
from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.zones import ZoneConfig, Zones
from tests.conftest import ASSETS, require
from tests.live.test_live import drain, live_config, wait_until

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
