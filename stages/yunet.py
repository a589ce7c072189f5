"""The OpenCV YuNet detector as a registered backend (``detect.backend: yunet``; the contract:
:mod:`stages.detector_backends`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from core.types import Detections

from .config import DetectConfig
from .detector_backends import register
from .detector_io import finish, letterbox, padded, unscaled
from .errors import ModelError

__all__ = ["YuNetDetector"]


@register("yunet")
class YuNetDetector:
    """OpenCV YuNet (``cv2.FaceDetectorYN``) on the CPU: any input size, one image at a time, one call at a time
    (its input size and threshold are set on the one network)."""

    concurrent = False

    def __init__(self, cfg: DetectConfig, path: Path) -> None:
        if cfg.device != "cpu":
            raise ModelError(
                f"detect.device: YuNet runs on the CPU (OpenCV), got {cfg.device}; use scrfd on a GPU"
            )
        self.cfg = cfg
        self.input_size = tuple(cfg.input_size)
        try:
            self.net = cv2.FaceDetectorYN.create(
                str(path), "", self.input_size, cfg.score_threshold, cfg.nms_threshold, 5000
            )
        except cv2.error as exc:
            raise ModelError(
                f"cannot load YuNet detector {path}: {str(exc).strip().splitlines()[-1][:200]}"
            ) from None

    def __call__(
        self, images: Sequence[np.ndarray], threshold: float | None = None, min_size: float | None = None
    ) -> list[Detections]:
        """As :meth:`stages.scrfd.ScrfdDetector.__call__`, one image at a time."""
        self.net.setScoreThreshold(self.cfg.score_threshold if threshold is None else threshold)
        try:
            return [self._detect(*letterbox(img, self.input_size), img.shape, min_size) for img in images]
        finally:
            self.net.setScoreThreshold(self.cfg.score_threshold)

    def native(
        self, images: Sequence[np.ndarray], threshold: float, scales: Sequence[float]
    ) -> list[Detections]:
        """As :meth:`stages.scrfd.ScrfdDetector.native`, one image at a time (OpenCV takes any input size)."""
        self.net.setScoreThreshold(threshold)
        try:
            out = []
            for img, scale in zip(images, scales):
                canvas = padded(img)
                self.net.setInputSize((canvas.shape[1], canvas.shape[0]))
                out.append(self._detect(canvas, scale, unscaled(img.shape, scale)))
            return out
        finally:
            self.net.setInputSize(self.input_size)
            self.net.setScoreThreshold(self.cfg.score_threshold)

    def _detect(self, canvas: np.ndarray, scale: float, shape, min_size: float | None = None) -> Detections:
        _, faces = self.net.detect(canvas)
        if faces is None or not len(faces):
            return Detections.empty()
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
        return finish(boxes, faces[:, 14], faces[:, 4:14].reshape(-1, 5, 2), self.cfg, scale, shape, min_size)
