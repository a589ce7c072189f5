from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.types import Detections
from stages.align import (
    ARCFACE_TEMPLATE,
    CUBIC_ABOVE,
    Aligner,
    align_face,
    magnification,
    similarity_transform,
)


@pytest.mark.parametrize(
    "angle,scale,shift", [(0.0, 1.0, (0, 0)), (30.0, 2.5, (40, -7)), (-75.0, 0.3, (3, 90))]
)
def test_similarity_recovers_a_known_transform(angle, scale, shift):
    t = np.deg2rad(angle)
    rot = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    src = ARCFACE_TEMPLATE @ rot.T + shift
    m = similarity_transform(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], ARCFACE_TEMPLATE, atol=1e-9)


def test_reflection_is_not_used():
    mirrored = ARCFACE_TEMPLATE * [-1, 1]
    m = similarity_transform(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_align_puts_landmarks_on_the_template():
    rng = np.random.default_rng(0)
    image = np.zeros((400, 300, 3), np.uint8)
    lm = ARCFACE_TEMPLATE * 2 + [60, 100]
    for x, y in lm.round().astype(int):  # bright dots at the landmarks
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    image[..., 1] = rng.integers(0, 20, image.shape[:2])
    crop = align_face(image, lm)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for x, y in ARCFACE_TEMPLATE.round().astype(int):
        assert crop[y, x, 0] > 200


def test_bad_landmarks():
    with pytest.raises(ValueError, match=r"\[5, 2\]"):
        align_face(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 2)))


@pytest.mark.parametrize("n", [0, 1, 3])
def test_aligner_one_crop_per_face(n):
    lm = np.repeat(ARCFACE_TEMPLATE[None].astype(np.float32), n, axis=0)
    dets = Detections(np.zeros((n, 4), np.float32), np.ones(n, np.float32), lm)
    crops = Aligner().align(np.zeros((120, 120, 3), np.uint8), dets)
    assert len(crops) == n and all(c.shape == (112, 112, 3) for c in crops)


@pytest.mark.parametrize("scale, cubic", [(0.1, True), (0.4, True), (0.6, False), (2.0, False)])
def test_tiny_faces_are_enlarged_bicubically(scale, cubic):
    """A face shown at ``scale`` of the crop's size is enlarged 1/scale times: bicubic above CUBIC_ABOVE."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (300, 300, 3)).astype(np.uint8)
    lm = ARCFACE_TEMPLATE * scale + [50, 60]
    assert magnification(lm) == pytest.approx(1 / scale)
    matrix = similarity_transform(lm, ARCFACE_TEMPLATE)
    flags = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    expected = cv2.warpAffine(image, matrix, (112, 112), flags=flags, borderValue=0)
    np.testing.assert_array_equal(align_face(image, lm), expected)
    assert (1 / scale > CUBIC_ABOVE) == cubic
