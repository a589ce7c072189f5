"""Small thumbnails of whole frames for the cheap per-frame checks (shot cuts, motion)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["thumbnail"]


def thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` reduced to ``size`` (w, h) by area averaging, cheaply on large frames: rows and columns are first
    decimated to about four per thumbnail pixel, every ``step``-th row and column from the first (the last partial
    step dropped), by a nearest-neighbour resize by a whole factor. To 160x90 on a 2-core AMD EPYC: 0.5 ms from
    1920x1080 and 0.4 ms from 3840x2160, against 1.25 ms through a strided view (which resize copies first) and
    1.5 / 6.9 ms averaging the whole frame."""
    h, w = image.shape[:2]
    step = max(1, min(w // (4 * size[0]), h // (4 * size[1])))
    if step > 1:
        rows, cols = h // step, w // step
        image = cv2.resize(image[: rows * step, : cols * step], (cols, rows), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
