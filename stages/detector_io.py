"""What the detector backends share: images into a detector's input (letterboxed, padded) and raw detections back
into the frame's coordinates (:func:`finish`)."""

from __future__ import annotations

import cv2
import numpy as np

from core.types import Detections

from .config import DetectConfig
from .tiling import letterbox_scale, nms, pad32

__all__ = ["finish", "letterbox", "padded", "unscaled"]


def letterbox(image: np.ndarray, size: tuple[int, int], fit: bool = False) -> tuple[np.ndarray, float]:
    """Resize ``image`` into a ``size=(w, h)`` canvas keeping its aspect ratio; returns (canvas, scale). ``fit``:
    the canvas is cut to the resized image, its sides rounded up to multiples of 32 (a 16:9 frame in 640x640:
    640x384), so the detector does not run on padding."""
    w, h = size
    ih, iw = image.shape[:2]
    scale = letterbox_scale(iw, ih, size)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    if fit:
        w, h = min(w, pad32(nw)), min(h, pad32(nh))
    canvas = np.zeros((h, w, 3), np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return canvas, scale


def padded(image: np.ndarray, size: tuple[int, int] | None = None, multiple: int = 32) -> np.ndarray:
    """``image`` padded with black right and bottom: to ``size=(w, h)`` (at least the image's own size), or else
    to sides that are multiples of ``multiple`` (at least one ``multiple``)."""
    h, w = image.shape[:2]
    if size is None:
        pw, ph = (max(multiple, -(-side // multiple) * multiple) for side in (w, h))
    else:
        pw, ph = size
    if (ph, pw) == (h, w):
        return image
    if ph < h or pw < w:
        raise ValueError(f"cannot pad a {w}x{h} image to {pw}x{ph}: expected a size at least the image's")
    canvas = np.zeros((ph, pw, 3), np.uint8)
    canvas[:h, :w] = image
    return canvas


def unscaled(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """The (height, width) of an image that, resized by ``scale``, has ``shape``."""
    return round(shape[0] / scale), round(shape[1] / scale)


def finish(
    boxes: np.ndarray,
    scores: np.ndarray,
    kps: np.ndarray,
    cfg: DetectConfig,
    scale: float,
    frame_shape: tuple[int, ...],
    min_size: float | None = None,
) -> Detections:
    """Raw detections in the detector's input (``boxes [N, 4]`` xyxy, ``scores [N]``, ``kps [N, 5, 2]`` or
    ``[N, 10]``) of an image resized by ``scale``: merged by NMS (at most ``max_faces``), brought back to the frame
    (``frame_shape``, clipped to it) and those smaller than ``min_size`` px (default ``cfg.min_face_size``)
    dropped."""
    min_size = cfg.min_face_size if min_size is None else min_size
    if len(boxes):
        keep = nms(boxes, scores, cfg.nms_threshold)[: cfg.max_faces]
        boxes, scores, kps = boxes[keep] / scale, scores[keep], kps[keep] / scale
        h, w = frame_shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        big = side >= min_size
        boxes, scores, kps = boxes[big], scores[big], kps[big]
    if not len(boxes):
        return Detections.empty()
    return Detections(
        boxes.astype(np.float32), scores.astype(np.float32), kps.reshape(-1, 5, 2).astype(np.float32)
    )
