"""Where to look for faces in each frame of one stream: everything now and then, in between only where faces can be.

Full detection (the frame letterboxed, and at native resolution where it needs it) runs on the first frame and
every ``full_every`` frames after it. In between, the detector looks only at regions of interest:

- around the boxes of the stream's live tracks, grown by ``region_margin`` of their size (at least 16 px) for the
  motion between frames; each region carries its face's size, so the detector need not see a large face at full
  resolution;
- where the image changed since the previous frame (a cheap difference of grey thumbnails), away from those
  tracks (motion that touches a track is taken to be its person's), the smallest moving areas first, up to
  ``motion_share`` of the frame: a face that walks into an empty part of the scene is seen before the next full
  frame, and one that appears beside a tracked person or in a crowd waits for it.

An empty, still scene then costs almost nothing. When most of the image changed (a cut, a camera that pans), the
frame is detected in full at once. ``full_every: 1`` detects everything in every frame (no schedule).
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import DetectConfig
from .thumbnail import thumbnail

__all__ = ["DetectionSchedule", "motion_regions"]

THUMB_WIDTH = 160  # px: width of the grey thumbnails compared for motion
MIN_MARGIN_PX = 16.0
MIN_AREA = 128.0 * 128.0  # px: what searching the smallest region costs (the detector's smallest window)
SCENE_CHANGE = 0.5  # share of the thumbnail's pixels that changed: a new scene, detected in full


def motion_regions(
    previous: np.ndarray, current: np.ndarray, threshold: int, scale: float
) -> np.ndarray | None:
    """Boxes ``[K, 4]`` (frame px) around the pixels whose grey level changed by more than ``threshold`` between
    two thumbnails taken at ``scale`` of the frame; None when more than SCENE_CHANGE of them changed."""
    changed = (cv2.absdiff(previous, current) > threshold).astype(np.uint8)
    if changed.mean() > SCENE_CHANGE:
        return None
    if not changed.any():
        return np.zeros((0, 4), np.float32)
    changed = cv2.dilate(changed, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    x, y, w, h = (stats[1:count, i].astype(np.float32) for i in range(4))
    return np.stack([x, y, x + w, y + h], axis=1) / scale


class DetectionSchedule:
    """Per-stream plan: ``plan(image, track_boxes)`` is None for a full detection, else the regions of interest
    ``[K, 5]`` to detect in (possibly none): xyxy in frame px and the side of the face expected there (px; 0 where
    a face of any size may be, for motion)."""

    def __init__(self, cfg: DetectConfig) -> None:
        self.every = cfg.full_every
        self.threshold = cfg.motion_threshold
        self.margin = cfg.region_margin
        self.motion_share = cfg.motion_share
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
        thumb = cv2.cvtColor(thumbnail(image, size), cv2.COLOR_BGR2GRAY)
        previous, self._previous = self._previous, thumb
        full = self._count % self.every == 0 or previous is None or previous.shape != thumb.shape
        moved = None if full else motion_regions(previous, thumb, self.threshold, scale)
        if moved is None:
            # due, or a new scene: the next full detection comes full_every frames after this one
            self._count = 1
            return None
        self._count += 1
        boxes = np.asarray(track_boxes, np.float32).reshape(-1, 4)
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        grow = np.maximum(side * self.margin, MIN_MARGIN_PX)[:, None]
        around = boxes + np.concatenate([-grow, -grow, grow, grow], axis=1)
        moved = moved[~_overlaps(moved, around)]
        moved = _smallest(moved, self.motion_share * w * h)
        regions = np.concatenate(
            [np.column_stack([around, side]), np.column_stack([moved, np.zeros(len(moved), np.float32)])]
        ).astype(np.float32)
        regions[:, [0, 2]] = regions[:, [0, 2]].clip(0, w)
        regions[:, [1, 3]] = regions[:, [1, 3]].clip(0, h)
        return regions


def _smallest(boxes: np.ndarray, budget: float) -> np.ndarray:
    """The smallest of ``boxes`` ``[K, 4]`` whose areas (each at least MIN_AREA) add up to at most ``budget``."""
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), MIN_AREA)
    order = np.argsort(area, kind="stable")
    return boxes[order[np.cumsum(area[order]) <= budget]]


def _overlaps(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Mask of ``boxes`` ``[K, 4]`` that intersect any of ``others`` ``[M, 4]``."""
    if not len(boxes) or not len(others):
        return np.zeros(len(boxes), bool)
    a, b = boxes[:, None, :], others[None, :, :]
    return (
        (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])
    ).any(1)
