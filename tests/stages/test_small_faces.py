"""Faces from 8 px (``detect.min_face_px`` below 12): the frame is never enlarged as a whole, only windows where a
small face may be (a weak small face of a native-resolution pass, a tracked small face), and faces found at their
own size keep their detections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.tiling import window_scale
from tests.conftest import require
from tests.stages.conftest import FRIENDS, SCRFD

NAMES = ("Rachel", "Monica", "Phoebe", "Ross", "Chandler", "Joey")
SMALL = [(300, 300), (960, 540), (1500, 800)]  # centres of the 10 px faces
LARGE = [(300, 800), (1500, 250)]  # centres of the 64 px faces


@pytest.mark.parametrize(
    "face, upscale, expected",
    [
        (8, 2.0, 2.0),  # capped
        (12, 2.0, 2.0),
        (16, 2.0, 1.5),  # toward 24 px
        (24, 2.0, 1.0),
        (64, 2.0, 1.0),  # a large face is never enlarged
        (192, 2.0, 0.5),  # a very large one shrunk to about 96 px
        (8, 1.0, 1.0),  # min_face_px 12 and up: nothing enlarged
    ],
)
def test_window_scale(face, upscale, expected):
    assert window_scale(face, upscale) == pytest.approx(expected)


def _face(photo: np.ndarray, box: np.ndarray, side_px: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    side = min(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = photo[max(0, int(cy - side)) : int(cy + side), max(0, int(cx - side)) : int(cx + side)]
    return cv2.resize(crop, None, fx=side_px / side, fy=side_px / side, interpolation=cv2.INTER_AREA)


def _paste(canvas: np.ndarray, face: np.ndarray, centres) -> None:
    fh, fw = face.shape[:2]
    for cx, cy in centres:
        canvas[cy - fh // 2 : cy - fh // 2 + fh, cx - fw // 2 : cx - fw // 2 + fw] = face


def _near(found, centres) -> list[np.ndarray]:
    """Per centre, the indices of the detections whose centre lies within 12 px of it."""
    mid = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2
    return [np.flatnonzero(np.abs(mid - np.asarray(c)).max(axis=1) < 12) for c in centres]


def _counting(min_face_px: float) -> tuple[FaceDetector, list[tuple[int, int]]]:
    """A detector recording the (height, width) of every image it runs on at native resolution (after any
    enlargement; the passes of a call run at once, so in no set order)."""
    detector = FaceDetector(DetectConfig(model=str(require(SCRFD)), threads=1, min_face_px=min_face_px))
    seen, native = [], detector._impl.native
    detector._impl.native = lambda images, *rest: (
        seen.extend(i.shape[:2] for i in images) or native(images, *rest)
    )
    return detector, seen


def test_small_faces_are_looked_at_enlarged_and_large_faces_keep_their_detections():
    """Six 1080p frames, each with one gallery face three times at 10 px and twice at 64 px. With min_face_px 8
    most 10 px faces are found (12: few); the 64 px faces are found with the same boxes and scores as with 12
    (the frame is not enlarged, so no lower-scored enlarged copy replaces them); the enlarged windows add less
    than a quarter of the frame's pixels."""
    plain = FaceDetector(DetectConfig(model=str(require(SCRFD)), threads=1, tiling="off"))
    detectors = {m: _counting(m) for m in (12, 8)}
    small_found = {12: 0, 8: 0}
    for name in NAMES:
        photo = cv2.imread(str(require(FRIENDS) / f"{name}.png"))
        box = plain.detect([photo])[0].xyxy[0]
        frame = np.full((1080, 1920, 3), 120, np.uint8)
        _paste(frame, _face(photo, box, 10), SMALL)
        _paste(frame, _face(photo, box, 64), LARGE)
        found = {}
        for m, (detector, seen) in detectors.items():
            seen.clear()
            found[m] = detector.detect([frame])[0]
            small_found[m] += sum(len(k) > 0 for k in _near(found[m], SMALL))
            widths = [w for h, w in seen if h == 1080]  # the frame at its own size (in bands)
            assert widths and sum(widths) >= 1920 and max(widths) <= 1920
            extra = sum(h * w for h, w in seen if h != 1080)
            assert extra < 0.25 * 1920 * 1080 if m == 8 else extra == 0, (name, seen)
        for k12, k8 in zip(_near(found[12], LARGE), _near(found[8], LARGE)):
            assert len(k12) == len(k8) == 1, name
            np.testing.assert_allclose(found[8].xyxy[k8], found[12].xyxy[k12], atol=1e-3)
            np.testing.assert_allclose(found[8].score[k8], found[12].score[k12], atol=1e-5)
    assert small_found[8] >= 12 and small_found[8] >= 2 * small_found[12], small_found
