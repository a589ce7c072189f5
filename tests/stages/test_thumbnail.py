"""Thumbnails of whole frames: the decimation is a nearest-neighbour resize, pixel for pixel the strided view."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.thumbnail import thumbnail


@pytest.mark.parametrize(
    "shape,size",
    [
        ((1080, 1920, 3), (160, 90)),
        ((2160, 3840, 3), (160, 90)),
        ((721, 1281, 3), (160, 90)),  # odd sides: the last partial step of rows and columns is dropped
        ((360, 640, 3), (160, 90)),
        ((90, 160, 3), (160, 90)),  # no decimation
        ((1, 1, 3), (1, 1)),
    ],
)
def test_thumbnail_equals_area_averaging_of_the_strided_frame(shape, size):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, np.uint8)
    step = max(1, min(shape[1] // (4 * size[0]), shape[0] // (4 * size[1])))
    rows, cols = shape[0] // step * step, shape[1] // step * step
    strided = np.ascontiguousarray(image[:rows:step, :cols:step])
    expected = cv2.resize(strided, size, interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(thumbnail(image, size), expected)
