"""Redaction of exported evidence: every face but the exported tracks' own is blurred beyond recognition.

A :class:`Redactor` is a clip frame filter ``(image, t) -> image`` (:func:`pipeline.services.clips.cut_clip`): the
detector runs on the whole frame at native resolution (tiling on, a score threshold no higher than ``REDACT_SCORE``
so that a faint face is blurred rather than missed), and every detected face whose box is not one of the kept
tracks' boxes at that time (IoU at least ``KEEP_IOU`` or its centre inside), plus the boxes of the tracker's other
tracks, is pixelated and blurred. Pixels inside a kept box are left as they were. ``blurred`` counts the faces
blurred.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.services.clips import track_box
from stages.config import DetectConfig
from stages.detect import FaceDetector

logger = logging.getLogger(__name__)

__all__ = ["KEEP_IOU", "REDACT_SCORE", "Redactor", "blur_box", "redaction_detector"]

KEEP_IOU = 0.3  # a detection overlapping a kept box this much is the kept face
REDACT_SCORE = 0.25  # the detector's score threshold for redaction is at most this: a faint face is blurred
GROW = 0.25  # a blurred box is enlarged by this fraction of its side on each side
BLOCKS = 2  # a blurred face is pixelated to about this many blocks across
ROUNDS = 4  # blur, look again: a pixelated head enlarged for the small-face search can still read as a face


def redaction_detector(cfg: DetectConfig) -> FaceDetector:
    """The configured detector, seeing every frame whole at native resolution, at a score threshold of at most
    ``REDACT_SCORE``."""
    section = cfg.model_copy(
        update={"tiling": "on", "score_threshold": min(cfg.score_threshold, REDACT_SCORE), "full_every": 1}
    )
    return FaceDetector(section)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def is_kept(box: np.ndarray, kept: Sequence[np.ndarray]) -> bool:
    """Whether detection ``box`` ``[4]`` is one of the ``kept`` boxes: IoU at least ``KEEP_IOU`` or centre inside."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(k[0] <= cx <= k[2] and k[1] <= cy <= k[3] or _iou(box, k) >= KEEP_IOU for k in kept)


def blur_box(image: np.ndarray, box: np.ndarray) -> None:
    """Pixelate and blur ``box`` ``[4]`` (enlarged by ``GROW``) of ``image`` in place."""
    h, w = image.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0, y0 = max(0, int(box[0] - GROW * bw)), max(0, int(box[1] - GROW * bh))
    x1, y1 = min(w, int(np.ceil(box[2] + GROW * bw))), min(h, int(np.ceil(box[3] + GROW * bh)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    region = image[y0:y1, x0:x1]
    small = cv2.resize(
        region, (max(1, BLOCKS), max(1, round(BLOCKS * (y1 - y0) / (x1 - x0)))), interpolation=cv2.INTER_AREA
    )
    big = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    k = max(3, (min(x1 - x0, y1 - y0) // 4) | 1)
    image[y0:y1, x0:x1] = cv2.GaussianBlur(big, (k, k), 0)


class Redactor:
    """A frame filter that blurs every face but those of ``kept`` (each a track's rows ``[K, 5]``); ``others``:
    rows of the tracker's other tracks, blurred wherever they were seen. ``blurred``: faces blurred so far."""

    def __init__(
        self, detector: FaceDetector, kept: Sequence[np.ndarray], others: Sequence[np.ndarray] = ()
    ) -> None:
        self.detector = detector
        self.kept = list(kept)
        self.others = list(others)
        self.blurred = 0
        self.frames = 0

    def boxes_to_blur(
        self, image: np.ndarray, t: float, scale: float = 1.0, found: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(boxes to blur, kept boxes) in ``image`` (``scale`` times the source's size) at time ``t``; ``found``:
        the detections ``[N, 4]`` when already run."""
        if found is None:
            found = self.detector.detect([image])[0].xyxy
        kept = [b * scale for b in (track_box(rows, t) for rows in self.kept) if b is not None]
        others = [b * scale for b in (track_box(rows, t) for rows in self.others) if b is not None]
        blur = [box for box in found if not is_kept(box, kept)]
        blur += [b for b in others if not any(_iou(b, k) >= KEEP_IOU for k in kept + blur)]
        return blur, kept

    def __call__(self, image: np.ndarray, t: float) -> np.ndarray:
        """Blur every face of the frame at time ``t`` but the kept ones (in place; returns ``image``)."""
        return self._apply(image, *self.boxes_to_blur(image, t))

    def still(self, image: np.ndarray, own: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """The same for a still of one of the kept tracks (rows ``own`` ``[K, 5]``) whose time is unknown, of
        ``scale`` times the source's size: its time is that of the row the best-overlapping detection matches
        (IoU at least ``KEEP_IOU``); without one every face is blurred."""
        found = self.detector.detect([image])[0].xyxy
        best = (0.0, None)
        for box in found:
            for row in own:
                overlap = _iou(box, row[1:] * scale)
                if overlap > best[0]:
                    best = (overlap, float(row[0]))
        if best[1] is None or best[0] < KEEP_IOU:
            return self._apply(image, list(found), [])
        return self._apply(image, *self.boxes_to_blur(image, best[1], scale, found))

    def _apply(self, image: np.ndarray, blur: list[np.ndarray], kept: list[np.ndarray]) -> np.ndarray:
        """Blur ``blur`` but not ``kept``; then the detector looks again and what it still finds outside ``kept``
        is blurred once more (a pixelated head can still read as a face), up to ``ROUNDS`` times."""
        count = len(blur)
        for _ in range(ROUNDS):
            if not blur:
                break
            original = image.copy()
            for box in blur:
                blur_box(image, box)
            h, w = image.shape[:2]
            for k in kept:  # the exported faces stay as they were
                x0, y0 = max(0, int(k[0])), max(0, int(k[1]))
                x1, y1 = min(w, int(np.ceil(k[2]))), min(h, int(np.ceil(k[3])))
                image[y0:y1, x0:x1] = original[y0:y1, x0:x1]
            blur = [box for box in self.detector.detect([image])[0].xyxy if not is_kept(box, kept)]
        self.blurred += count
        self.frames += 1
        return image
