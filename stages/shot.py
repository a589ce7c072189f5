"""Shot-cut detection: a hard cut in edited footage ends every track, so no id survives onto another person
who happens to stand where the last one stood. Cuts are found by the Bhattacharyya distance between the
hue-saturation histograms of consecutive processed frames (downscaled, so cheap)."""

from __future__ import annotations

import cv2
import numpy as np

from .config import ShotConfig
from .thumbnail import thumbnail

__all__ = ["ShotCutDetector"]

_SIZE = (160, 90)
_BINS = [16, 8]


class ShotCutDetector:
    """``is_cut(image)`` is True when ``image`` starts a new shot relative to the previous call's image."""

    def __init__(self, cfg: ShotConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self._previous: np.ndarray | None = None

    def distance(self, image: np.ndarray) -> float | None:
        """Histogram distance to the previous image (0 = same colours, 1 = disjoint); None for the first."""
        small = thumbnail(image, _SIZE)
        hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_BGR2HSV)], [0, 1], None, _BINS, [0, 180, 0, 256])
        cv2.normalize(hist, hist, 1, 0, cv2.NORM_L1)
        previous, self._previous = self._previous, hist
        return None if previous is None else float(cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA))

    def is_cut(self, image: np.ndarray) -> bool:
        if not self.cfg.enabled:
            return False
        d = self.distance(image)
        return d is not None and d > self.cfg.cut_distance
