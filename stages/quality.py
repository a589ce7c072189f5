"""Cheap per-crop quality: face size, detector score, sharpness and a pose proxy from the 5 landmarks.

The scalar score multiplies four factors in [0, 1]: resolution ``min(1, size / ref_face_size)``, the detector
score, sharpness ``s / (s + ref_sharpness)`` and frontality ``1 - pose``. It only ranks crops of one track
against each other, so its absolute value has no meaning across videos.

Sharpness is measured at the face's own resolution: the aligned crop of a face smaller than the crop (enlarged by
alignment, :func:`stages.align.magnification`) is first reduced back to the face's size in the frame, so that the
blur added by enlarging a 12 px face to 112 px does not hide whether the face itself was sharp or blurred. For
faces at or above the crop's scale nothing changes. Among a track's crops the score thus prefers the largest
(resolution) and the sharpest at their own scale.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.types import Quality

from .align import magnification
from .config import QualityConfig

__all__ = ["QualityScorer", "pose_proxy", "sharpness"]


MIN_NATIVE_PX = 8


def sharpness(crop: np.ndarray, enlarged: float = 1.0) -> float:
    """Variance of the Laplacian of the grey crop: high for crisp edges, near 0 for blur. ``enlarged``: how many
    times alignment enlarged the face; above 1 the crop is first reduced by as much (to at least
    ``MIN_NATIVE_PX``), measuring the face at its own resolution."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    if enlarged > 1.0:
        h, w = grey.shape[:2]
        size = (max(MIN_NATIVE_PX, round(w / enlarged)), max(MIN_NATIVE_PX, round(h / enlarged)))
        if size[0] < w:
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def pose_proxy(landmarks: np.ndarray) -> float:
    """0 for a frontal face, towards 1 for a profile: how far the nose sits from the eye/mouth midline.

    The horizontal offset of the nose from the midpoint of eyes and mouth corners, over half the eye distance,
    combined with the vertical offset of the nose from the eye-mouth middle (pitch), clipped to [0, 1].
    """
    lm = np.asarray(landmarks, np.float64)
    eye_l, eye_r, nose, mouth_l, mouth_r = lm
    axis = eye_r - eye_l
    eye_dist = np.linalg.norm(axis)
    if eye_dist < 1e-6:
        return 1.0
    ux = axis / eye_dist
    uy = np.array([-ux[1], ux[0]])
    mid = (eye_l + eye_r + mouth_l + mouth_r) / 4
    yaw = abs(float((nose - mid) @ ux)) / (eye_dist / 2)
    eyes_y = float(((eye_l + eye_r) / 2 - mid) @ uy)
    mouth_y = float(((mouth_l + mouth_r) / 2 - mid) @ uy)
    span = abs(mouth_y - eyes_y)
    pitch = abs(float((nose - mid) @ uy)) / (span / 2) if span > 1e-6 else 1.0
    return float(min(1.0, max(yaw, 0.5 * pitch)))


class QualityScorer:
    """Builds a :class:`Quality` per crop and ranks crops by one scalar score."""

    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg

    def assess(self, crop: np.ndarray, xyxy: np.ndarray, det_score: float, landmarks: np.ndarray) -> Quality:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        size = max(0.0, min(x2 - x1, y2 - y1))
        return Quality(
            face_size=size,
            det_score=float(det_score),
            sharpness=sharpness(crop, magnification(landmarks)),
            pose=pose_proxy(landmarks),
        )

    def score(self, q: Quality) -> float:
        c = self.cfg
        resolution = min(1.0, q.face_size / c.ref_face_size)
        crisp = q.sharpness / (q.sharpness + c.ref_sharpness)
        return float(resolution * max(0.0, q.det_score) * crisp * (1.0 - q.pose))

    def usable(self, q: Quality) -> bool:
        """Whether the crop passes the hard gates (size, detector score, pose) and may be embedded."""
        c = self.cfg
        return q.face_size >= c.min_face_size and q.det_score >= c.min_det_score and q.pose <= c.max_pose

    def reset(self) -> None:
        """Quality scoring keeps no per-stream state."""
