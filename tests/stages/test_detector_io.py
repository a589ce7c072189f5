"""Windows shrunk for the detector (stages/detector_io.py ``shrink``): the asked size, close to area averaging, the
same faces found."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.detector_io import shrink
from tests.conftest import require
from tests.stages.conftest import GROUP, SCRFD
from tests.stages.reference import iou


@pytest.mark.parametrize(
    "shape,size",
    [
        ((576, 576), (202, 202)),  # by 2, then linear
        ((640, 1280), (100, 50)),  # by 8, then linear
        ((576, 576), (288, 288)),  # exactly half: area only
        ((1080, 1920), (1, 1)),  # to one pixel
        ((333, 517), (200, 100)),  # odd sides: linear only
        ((64, 64), (64, 64)),  # no change
    ],
)
def test_shrink_gives_the_size_asked(shape, size):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert shrink(image, size).shape == (size[1], size[0], 3)


def test_shrink_is_close_to_area_averaging_on_a_photo_and_finds_the_same_faces():
    photo = cv2.imread(str(require(GROUP)))
    h, w = photo.shape[:2]
    crop = photo[: h // 32 * 32, : w // 32 * 32]
    size = (round(crop.shape[1] * 0.7), round(crop.shape[0] * 0.7))
    ours, area = shrink(crop, size), cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    assert np.abs(ours.astype(int) - area).mean() < 3.0
    detector = FaceDetector(DetectConfig(model=str(require(SCRFD)), tiling="off"))
    a, b = detector.letterboxed([ours])[0], detector.letterboxed([area])[0]
    assert len(a) == len(b) > 0
    overlap = iou(a.xyxy, b.xyxy)
    assert (overlap.max(axis=1) > 0.9).all()
