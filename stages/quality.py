"""Cheap per-crop quality: face size, detector score, sharpness and a pose proxy from the 5 landmarks.

The scalar score multiplies four factors in [0, 1]: resolution ``min(1, size / ref_face_size)``, the detector
score, sharpness ``s / (s + ref_sharpness)`` and frontality ``1 - pose``. It only ranks crops of one track
against each other, so its absolute value has no meaning across videos.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.types import Quality

from .config import QualityConfig

__all__ = ["QualityScorer", "pose_proxy", "sharpness"]


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: high for crisp edges, near 0 for blur."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
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
            face_size=size, det_score=float(det_score), sharpness=sharpness(crop), pose=pose_proxy(landmarks)
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
