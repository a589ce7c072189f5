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

Where a full detection also sees the frame at its own resolution (small faces in a large frame: the costliest
pass), only every ``complete_every``-th one sees all of it. The others see the frame letterboxed (large faces
anywhere) and at its own resolution around the live tracks and wherever the image changed since the last full
detection: a face that is new there since then moved or appeared, so it changed the image. A changed area as tall
as a near person (NEAR_FACES faces of SMALL_FACE_PX as the letterboxed frame sees them: people near enough for the
letterboxed frame to find their faces, or a crowd moving as one) is left to the letterboxed frame and the windows
around its tracks; a small face new inside it waits for the next complete one. Half the frame or more changed
elsewhere: all of it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import DetectConfig
from .thumbnail import thumbnail
from .tiling import SMALL_FACE_PX, letterbox_scale, sees_native

__all__ = ["DetectionSchedule", "motion_regions"]

THUMB_WIDTH = 160  # px: width of the grey thumbnails compared for motion
MIN_MARGIN_PX = 16.0
MIN_AREA = 128.0 * 128.0  # px: what searching the smallest region costs (the detector's smallest window)
SCENE_CHANGE = 0.5  # share of the thumbnail's pixels that changed: a new scene, detected in full
PARTIAL_SHARE = 0.5  # a full detection sees all of the frame at its own resolution where more of it changed
NEAR_FACES = 8.0  # this many faces of SMALL_FACE_PX (as the letterboxed frame sees them) tall: a near person


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
    a face of any size may be, for motion). A partial full detection is regions with the whole frame among them:
    a region larger than the detector's input is seen letterboxed (:meth:`stages.detect.FaceDetector.detect`)."""

    def __init__(self, cfg: DetectConfig) -> None:
        self.cfg = cfg
        self.every = cfg.full_every
        self.threshold = cfg.motion_threshold
        self.margin = cfg.region_margin
        self.motion_share = cfg.motion_share
        self.reset()

    def reset(self) -> None:
        self._count = 0
        self._fulls = 0
        self._previous: np.ndarray | None = None
        self._at_full: np.ndarray | None = None  # the thumbnail of the last full detection

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
            return self._full(thumb, scale, track_boxes, w, h, scene=not full)
        self._count += 1
        return self._regions(track_boxes, moved, self.motion_share * w * h, w, h)

    def _full(
        self, thumb: np.ndarray, scale: float, track_boxes: np.ndarray, w: int, h: int, scene: bool
    ) -> np.ndarray | None:
        """A full detection: all of the frame (None), or, where the frame is also seen at its own resolution and
        this is not a ``complete_every``-th one nor a new scene, the whole frame letterboxed with the tracks and
        what changed since the last full detection."""
        since, self._at_full = self._at_full, thumb
        self._fulls += 1
        cfg = self.cfg
        partial = (
            not scene
            and (self._fulls - 1) % cfg.complete_every != 0
            and since is not None
            and since.shape == thumb.shape
            and sees_native(w, h, tuple(cfg.input_size), cfg.tiling, cfg.min_face_px)
        )
        changed = motion_regions(since, thumb, self.threshold, scale) if partial else None
        if changed is not None:
            changed = changed[~self._near(changed, w, h)]
        if changed is None or _area(changed).sum() > PARTIAL_SHARE * w * h:
            self._fulls = 1  # complete: the next complete_every full detections count from here
            return None
        regions = self._regions(track_boxes, changed, np.inf, w, h)
        return np.concatenate([regions, np.asarray([[0, 0, w, h, 0]], np.float32)])

    def _near(self, boxes: np.ndarray, w: int, h: int) -> np.ndarray:
        """Mask of the changed areas ``[K, 4]`` at least NEAR_FACES faces of SMALL_FACE_PX (as the letterboxed frame
        sees them) tall: people near enough for the letterboxed frame to find their faces (a body is 7-8 faces
        tall), or a crowd moving as one. 1920x1080 in a 640 input: 576 px."""
        fit = letterbox_scale(w, h, tuple(self.cfg.input_size))
        return boxes[:, 3] - boxes[:, 1] >= NEAR_FACES * SMALL_FACE_PX / fit

    def _regions(
        self, track_boxes: np.ndarray, moved: np.ndarray, budget: float, w: int, h: int
    ) -> np.ndarray:
        """Regions around the tracks (with their face sizes) and the moving areas away from them (the smallest
        first, up to ``budget`` px), clipped to the frame."""
        boxes = np.asarray(track_boxes, np.float32).reshape(-1, 4)
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        grow = np.maximum(side * self.margin, MIN_MARGIN_PX)[:, None]
        around = boxes + np.concatenate([-grow, -grow, grow, grow], axis=1)
        moved = moved[~_overlaps(moved, around)]
        moved = _smallest(moved, budget)
        regions = np.concatenate(
            [np.column_stack([around, side]), np.column_stack([moved, np.zeros(len(moved), np.float32)])]
        ).astype(np.float32)
        regions[:, [0, 2]] = regions[:, [0, 2]].clip(0, w)
        regions[:, [1, 3]] = regions[:, [1, 3]].clip(0, h)
        return regions


def _area(boxes: np.ndarray) -> np.ndarray:
    """The areas of ``boxes`` ``[K, 4]``, each at least MIN_AREA."""
    return np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), MIN_AREA)


def _smallest(boxes: np.ndarray, budget: float) -> np.ndarray:
    """The smallest of ``boxes`` ``[K, 4]`` whose areas (each at least MIN_AREA) add up to at most ``budget``."""
    area = _area(boxes)
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
