"""Face alignment: a 5-point similarity transform onto the ArcFace 112x112 template.

Tiny faces: a face of 8-20 px is enlarged 6-14 times to fill the 112 px crop. Faces enlarged more than
``CUBIC_ABOVE`` times are warped with bicubic interpolation (sharper edges than bilinear at such magnifications,
where bilinear leaves visible facets); smaller magnifications, and reductions, keep bilinear. The embedder's own
preprocessing then takes the crop to its input size (FaceMoE: 120 px, bicubic), so this is the one upsampling
step from the frame's pixels to the model's.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.types import CROP_SIZE, Detections

__all__ = [
    "ARCFACE_TEMPLATE",
    "CUBIC_ABOVE",
    "Aligner",
    "align_face",
    "magnification",
    "similarity_transform",
]

# Left eye, right eye, nose tip, left and right mouth corners (as seen in the image) of a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
CUBIC_ABOVE = 2.0


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``src [N,2]`` onto ``dst [N,2]`` (Umeyama).

    Returns the 2x3 affine matrix.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def _matrix(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks)
    if landmarks.shape != (5, 2):
        raise ValueError(f"landmarks: expected [5, 2], got {list(landmarks.shape)}")
    return similarity_transform(landmarks, ARCFACE_TEMPLATE)


def magnification(landmarks: np.ndarray) -> float:
    """How many times the aligned crop enlarges the face of ``landmarks [5, 2]`` (below 1: it reduces it)."""
    matrix = _matrix(landmarks)
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Warp ``image`` (BGR uint8) so that its 5 ``landmarks [5, 2]`` land on the ArcFace template: 112x112x3,
    bicubic for faces enlarged more than ``CUBIC_ABOVE`` times (module docstring), else bilinear."""
    matrix = _matrix(landmarks)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    flags = cv2.INTER_CUBIC if scale > CUBIC_ABOVE else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=flags, borderValue=0)


class Aligner:
    """Turns one frame's detections into aligned crops, one per face, in detection order."""

    def align(self, image: np.ndarray, detections: Detections) -> list[np.ndarray]:
        return [align_face(image, lm) for lm in detections.landmarks]

    def reset(self) -> None:
        """Alignment keeps no per-stream state."""
