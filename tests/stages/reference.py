"""The references our detectors are compared with: insightface's own SCRFD class and OpenCV's own YuNet detector,
run as their authors run them, and how detections are compared."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from core.types import Detections


def insightface_scrfd(path: Path, threshold: float = 0.5):
    """insightface's SCRFD for ``path``, prepared as its FaceAnalysis prepares it (CPU, 640x640)."""
    insightface = pytest.importorskip("insightface")
    ref = insightface.model_zoo.get_model(str(path))
    ref.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=threshold)
    return ref


def opencv_yunet(path: Path, image: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's YuNet on ``image`` at the image's own size: (``[N, 5]`` xyxy + score, landmarks ``[N, 5, 2]``)."""
    h, w = image.shape[:2]
    net = cv2.FaceDetectorYN.create(str(path), "", (w, h), threshold, 0.4, 5000)
    _, faces = net.detect(image)
    faces = np.zeros((0, 15), np.float32) if faces is None else faces
    boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4], faces[:, 14:15]], axis=1)
    return boxes, faces[:, 4:14].reshape(-1, 5, 2)


def fitted(image: np.ndarray, side: int = 640) -> np.ndarray:
    """``image`` shrunk to fit a ``side`` square, so that a detector letterboxes it at scale 1: every detector sees
    the same pixels, whatever interpolation it resizes with."""
    s = side / max(image.shape[:2])
    size = (round(image.shape[1] * s), round(image.shape[0] * s))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a [N, 4]`` with every box of ``b [M, 4]`` (xyxy): ``[N, M]``."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clip(0).prod(axis=2)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(axis=1), (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def clipped(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boxes ``[N, 4+]`` xyxy clipped to an image of ``shape``, as ours are."""
    h, w = shape[:2]
    out = boxes[:, :4].copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def assert_same(
    ours: Detections, boxes: np.ndarray, kps: np.ndarray, shape, atol=0.5, score_atol=0.01
) -> None:
    """Our detections against a reference's (``boxes [N, 5]`` xyxy + score, ``kps [N, 5, 2]``; boxes clipped to the
    image as ours are), paired left to right: as many, boxes and landmarks within ``atol`` px, scores within
    ``score_atol``."""
    ref = clipped(boxes, shape)
    assert len(ours) == len(boxes) > 0
    a, b = np.argsort(ours.xyxy[:, 0]), np.argsort(ref[:, 0])
    np.testing.assert_allclose(ours.xyxy[a], ref[b], atol=atol)
    np.testing.assert_allclose(ours.landmarks[a], kps[b], atol=atol)
    np.testing.assert_allclose(ours.score[a], boxes[b, 4], atol=score_atol)


def assert_same_faces(ours: Detections, boxes: np.ndarray, min_iou: float) -> None:
    """Every face of the reference (``boxes [N, 4+]``) is one of ours with an IoU of at least ``min_iou``, and we
    find no other."""
    assert len(ours) == len(boxes) > 0
    best = iou(boxes[:, :4], ours.xyxy).max(axis=1)
    assert best.min() >= min_iou, best
