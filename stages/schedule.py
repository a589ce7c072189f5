"""Where to look for faces in each frame of one stream: everything now and then, in between only where faces can be.

Full detection (every tile of a tiled frame) runs on the first frame and every ``full_every`` frames after it. In
between, the detector looks only at regions of interest: around the boxes of the stream's live tracks (grown by
``region_margin`` of their size, at least 16 px, for the motion between frames) and where the image changed since
the previous frame (a cheap difference of grey thumbnails). An empty, still scene then costs almost nothing, and
a face that walks in is seen as motion before the next full frame. ``full_every: 1`` detects everything in every
frame (no schedule).
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import DetectConfig

__all__ = ["DetectionSchedule", "motion_regions"]

THUMB_WIDTH = 160  # px: width of the grey thumbnails compared for motion
MIN_MARGIN_PX = 16.0


def motion_regions(previous: np.ndarray, current: np.ndarray, threshold: int, scale: float) -> np.ndarray:
    """Boxes ``[K, 4]`` (frame px) around the pixels whose grey level changed by more than ``threshold`` between
    two thumbnails taken at ``scale`` of the frame."""
    changed = (cv2.absdiff(previous, current) > threshold).astype(np.uint8)
    if not changed.any():
        return np.zeros((0, 4), np.float32)
    changed = cv2.dilate(changed, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    x, y, w, h = (stats[1:count, i].astype(np.float32) for i in range(4))
    return np.stack([x, y, x + w, y + h], axis=1) / scale


class DetectionSchedule:
    """Per-stream plan: ``plan(image, track_boxes)`` is None for a full detection, else the regions of interest
    ``[K, 4]`` (xyxy, frame px; possibly none) to detect in."""

    def __init__(self, cfg: DetectConfig) -> None:
        self.every = cfg.full_every
        self.threshold = cfg.motion_threshold
        self.margin = cfg.region_margin
        self.reset()

    def reset(self) -> None:
        self._count = 0
        self._previous: np.ndarray | None = None

    def plan(self, image: np.ndarray, track_boxes: np.ndarray) -> np.ndarray | None:
        if self.every <= 1:
            return None
        h, w = image.shape[:2]
        scale = min(1.0, THUMB_WIDTH / w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        thumb = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        previous, self._previous = self._previous, thumb
        full = self._count % self.every == 0 or previous is None or previous.shape != thumb.shape
        self._count += 1
        if full:
            return None
        boxes = np.asarray(track_boxes, np.float32).reshape(-1, 4)
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        grow = np.maximum(side * self.margin, MIN_MARGIN_PX)[:, None]
        around = boxes + np.concatenate([-grow, -grow, grow, grow], axis=1)
        moved = motion_regions(previous, thumb, self.threshold, scale)
        regions = np.concatenate([around, moved])
        regions[:, [0, 2]] = regions[:, [0, 2]].clip(0, w)
        regions[:, [1, 3]] = regions[:, [1, 3]].clip(0, h)
        return regions
