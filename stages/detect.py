"""Face detection: SCRFD through onnxruntime (default, batched over frames) or OpenCV YuNet.

Frames of any size are letterboxed (resized keeping the aspect ratio, padded right/bottom) into the configured
input size, so frames of different sizes share one batch. With ``detect.tiling`` the frame is also detected in
overlapping tiles at its own resolution, so that small faces are not shrunk below what the detector resolves
(:mod:`stages.tiling`). Landmarks come in the ArcFace order: left eye,
right eye, nose, left mouth corner, right mouth corner, as seen in the image.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from core.types import Detections

from .config import DetectConfig
from .errors import ModelError
from .onnx_session import onnx_session
from .tiling import merge_detections, native_windows, needs_tiles, nms, pad32, region_windows

__all__ = ["FaceDetector", "letterbox", "nms", "resolve_detector_model"]

logger = logging.getLogger(__name__)

_SCRFD_STRIDES = (8, 16, 32)
_SCRFD_ANCHORS = 2
NATIVE_BATCH = 16  # windows of one size per detector run
RESOLVES_PX = 10.0  # about the smallest face (px at the detector's input) SCRFD and YuNet find
FINDS_PX = 12.0  # px at the detector's input from which they find most faces (10 px: a third at best)
MAX_UPSCALE = 2.0  # native-resolution passes are enlarged at most this much for a min_face_px below FINDS_PX


def letterbox(image: np.ndarray, size: tuple[int, int], fit: bool = False) -> tuple[np.ndarray, float]:
    """Resize ``image`` into a ``size=(w, h)`` canvas keeping its aspect ratio; returns (canvas, scale). ``fit``:
    the canvas is cut to the resized image, its sides rounded up to multiples of 32 (a 16:9 frame in 640x640:
    640x384), so the detector does not run on padding."""
    w, h = size
    ih, iw = image.shape[:2]
    scale = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    if fit:
        w, h = min(w, pad32(nw)), min(h, pad32(nh))
    canvas = np.zeros((h, w, 3), np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return canvas, scale


def resolve_detector_model(model: str, backend: str) -> Path:
    """An existing .onnx file, or (scrfd) the detector of an insightface model pack, fetched once if missing."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    looks_like_pack = backend == "scrfd" and path.suffix == "" and len(path.parts) == 1
    if not looks_like_pack:
        raise ModelError(f"detector model not found: {path} (expected an .onnx file)")
    root = Path("~/.insightface").expanduser()
    try:
        from insightface.utils import storage

        logger.info("fetching insightface model pack %s into %s", model, root / "models")
        chatter = io.StringIO()  # insightface prints its download progress; keep the user's streams clean
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            pack_dir = Path(storage.ensure_available("models", model, root=str(root)))
    except Exception as exc:  # noqa: BLE001 - offline, unknown pack, unwritable cache: the same advice
        raise ModelError(
            f"insightface model pack {model!r} is not in {root / 'models'} and could not be fetched "
            f"({type(exc).__name__}); set detect.model to a SCRFD .onnx file"
        ) from None
    found = sorted(pack_dir.rglob("det_*.onnx"))
    if not found:
        raise ModelError(f"insightface model pack {model!r} at {pack_dir} holds no det_*.onnx detector")
    return found[0]


def _padded(image: np.ndarray) -> np.ndarray:
    """``image`` padded with black right and bottom to sides that are multiples of 32 (at least 32)."""
    h, w = image.shape[:2]
    ph, pw = pad32(h), pad32(w)
    if (ph, pw) == (h, w):
        return image
    canvas = np.zeros((ph, pw, 3), np.uint8)
    canvas[:h, :w] = image
    return canvas


def _blob(images: Sequence[np.ndarray]) -> np.ndarray:
    """SCRFD's input ``[N, 3, H, W]`` float32 from BGR uint8 images of one size: RGB, ``(x - 127.5) / 128``. (OpenCV's
    blobFromImages does the same several times slower on some frames.)"""
    h, w = images[0].shape[:2]
    blob = np.empty((len(images), 3, h, w), np.float32)
    for n, image in enumerate(images):
        for c, channel in enumerate(reversed(cv2.split(image))):
            cv2.subtract(channel.astype(np.float32), 127.5, dst=blob[n, c])
    blob *= 1.0 / 128
    return blob


def _unscaled(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """The (height, width) of an image that, resized by ``scale``, has ``shape``."""
    return round(shape[0] / scale), round(shape[1] / scale)


def _finish(boxes, scores, kps, cfg: DetectConfig, scale: float, frame_shape) -> Detections:
    if len(boxes):
        keep = nms(boxes, scores, cfg.nms_threshold)[: cfg.max_faces]
        boxes, scores, kps = boxes[keep] / scale, scores[keep], kps[keep] / scale
        h, w = frame_shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        big = side >= cfg.min_face_size
        boxes, scores, kps = boxes[big], scores[big], kps[big]
    if not len(boxes):
        return Detections.empty()
    return Detections(
        boxes.astype(np.float32), scores.astype(np.float32), kps.reshape(-1, 5, 2).astype(np.float32)
    )


class _Scrfd:
    def __init__(self, cfg: DetectConfig, path: Path) -> None:
        self.cfg = cfg
        self.session = onnx_session(path, cfg.threads, cfg.device, "detector", provider=cfg.provider)
        outputs = self.session.get_outputs()
        if len(outputs) != 9:
            raise ModelError(
                f"{path}: expected a SCRFD model with 9 outputs (scores, boxes, 5 landmarks), "
                f"got {len(outputs)} outputs"
            )
        self.input_name = self.session.get_inputs()[0].name
        self._centers: dict[tuple[int, int], list[np.ndarray]] = {}
        self.batched = self.session.get_inputs()[0].shape[0] != 1

    def centers(self, w: int, h: int) -> list[np.ndarray]:
        """Anchor centres per stride for an input of ``w`` x ``h`` (cached per size)."""
        if (w, h) not in self._centers:
            levels = []
            for stride in _SCRFD_STRIDES:
                ys, xs = np.mgrid[: h // stride, : w // stride]
                grid = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
                levels.append(np.repeat(grid, _SCRFD_ANCHORS, axis=0))
            self._centers[(w, h)] = levels
        return self._centers[(w, h)]

    def native(
        self, images: Sequence[np.ndarray], threshold: float, scales: Sequence[float]
    ) -> list[Detections]:
        """Images as they are (padded right/bottom to multiples of 32; those of one padded size share a run);
        ``scales``: each was resized by that much, and its detections are returned in the coordinates before."""
        canvases = [_padded(img) for img in images]
        out: list[Detections | None] = [None] * len(images)
        for shape in dict.fromkeys(c.shape for c in canvases):
            group = [i for i, c in enumerate(canvases) if c.shape == shape]
            for start in range(0, len(group), NATIVE_BATCH if self.batched else 1):
                part = group[start : start + (NATIVE_BATCH if self.batched else 1)]
                blob = _blob([canvases[i] for i in part])
                outs = self.session.run(None, {self.input_name: blob})
                for b, i in enumerate(part):
                    shown = _unscaled(images[i].shape, scales[i])
                    out[i] = self._decode([o[b] for o in outs], scales[i], shown, shape, threshold)
        return out

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Frames letterboxed into canvases fitted to their aspect ratio; frames whose canvases have the same
        size share one run."""
        canvases, scales = zip(*(letterbox(img, self.cfg.input_size, fit=True) for img in images))
        out: list[Detections | None] = [None] * len(images)
        for shape in dict.fromkeys(c.shape for c in canvases):
            group = [i for i, c in enumerate(canvases) if c.shape == shape]
            blob = _blob([canvases[i] for i in group])
            if self.batched:
                outs = self.session.run(None, {self.input_name: blob})
            else:
                per = [self.session.run(None, {self.input_name: blob[b : b + 1]}) for b in range(len(group))]
                outs = [np.concatenate([p[j] for p in per]) for j in range(9)]
            for b, i in enumerate(group):
                out[i] = self._decode([o[b] for o in outs], scales[i], images[i].shape, shape)
        return out

    def _decode(self, outs, scale, shape, input_shape, threshold: float | None = None) -> Detections:
        threshold = self.cfg.score_threshold if threshold is None else threshold
        boxes, scores, kps = [], [], []
        centres = self.centers(input_shape[1], input_shape[0])
        for level, stride in enumerate(_SCRFD_STRIDES):
            score = outs[level].reshape(-1)
            hit = np.flatnonzero(score >= threshold)
            if not hit.size:
                continue
            centers = centres[level][hit]
            dist = outs[level + 3].reshape(-1, 4)[hit] * stride
            boxes.append(np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1))
            pts = outs[level + 6].reshape(-1, 10)[hit] * stride
            kps.append(pts.reshape(-1, 5, 2) + centers[:, None, :])
            scores.append(score[hit])
        if not boxes:
            return Detections.empty()
        return _finish(
            np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps), self.cfg, scale, shape
        )


class _YuNet:
    def __init__(self, cfg: DetectConfig, path: Path) -> None:
        if cfg.device != "cpu":
            raise ModelError(
                f"detect.device: YuNet runs on the CPU (OpenCV), got {cfg.device}; use scrfd on a GPU"
            )
        self.cfg = cfg
        try:
            self.net = cv2.FaceDetectorYN.create(
                str(path), "", tuple(cfg.input_size), cfg.score_threshold, cfg.nms_threshold, 5000
            )
        except cv2.error as exc:
            raise ModelError(
                f"cannot load YuNet detector {path}: {str(exc).strip().splitlines()[-1][:200]}"
            ) from None

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self._detect(*letterbox(img, self.cfg.input_size), img.shape) for img in images]

    def native(
        self, images: Sequence[np.ndarray], threshold: float, scales: Sequence[float]
    ) -> list[Detections]:
        """As :meth:`_Scrfd.native`, one image at a time."""
        self.net.setScoreThreshold(threshold)
        try:
            out = []
            for img, scale in zip(images, scales):
                canvas = _padded(img)
                self.net.setInputSize((canvas.shape[1], canvas.shape[0]))
                out.append(self._detect(canvas, scale, _unscaled(img.shape, scale)))
            return out
        finally:
            self.net.setInputSize(tuple(self.cfg.input_size))
            self.net.setScoreThreshold(self.cfg.score_threshold)

    def _detect(self, canvas: np.ndarray, scale: float, shape) -> Detections:
        _, faces = self.net.detect(canvas)
        if faces is None or not len(faces):
            return Detections.empty()
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
        return _finish(boxes, faces[:, 14], faces[:, 4:14].reshape(-1, 5, 2), self.cfg, scale, shape)


class FaceDetector:
    """Detects faces in batches of BGR uint8 frames; one :class:`Detections` per frame."""

    def __init__(self, cfg: DetectConfig) -> None:
        self.cfg = cfg
        path = resolve_detector_model(cfg.model, cfg.backend)
        self.model_path = path
        self._impl = _Scrfd(cfg, path) if cfg.backend == "scrfd" else _YuNet(cfg, path)
        # faces asked for below what the detector finds reliably: its native-resolution passes are enlarged
        self.upscale = min(MAX_UPSCALE, max(1.0, FINDS_PX / cfg.min_face_px))
        logger.info("detector %s from %s, input %sx%s", cfg.backend, path, *cfg.input_size)

    def detect(
        self, images: Sequence[np.ndarray], regions: Sequence[np.ndarray | None] | None = None
    ) -> list[Detections]:
        """One :class:`Detections` per frame. ``regions`` (one per frame, see :mod:`stages.schedule`): None
        detects the whole frame (and at native resolution where ``detect.tiling`` asks); regions ``[K, 5]`` (or
        ``[K, 4]``) limit detection to windows around them (:func:`stages.tiling.region_windows`; nothing when
        there is none)."""
        self._check(images)
        cfg = self.cfg
        regions = [None] * len(images) if regions is None else regions
        plans = [self._plan(img, r) for img, r in zip(images, regions)]
        found = iter(self._run([img for img, (whole, _) in zip(images, plans) if whole]))
        out = []
        for img, region, (whole, windows) in zip(images, regions, plans):
            first = next(found) if whole else Detections.empty()
            if not windows:
                out.append(first)
                continue
            h, w = img.shape[:2]
            threshold = max(
                0.0, cfg.score_threshold - (cfg.region_score_slack if region is not None else 0.0)
            )
            crops, scales = zip(*(self._window(img, win, scale) for win, scale in windows))
            parts = list(zip((win for win, _ in windows), self._impl.native(crops, threshold, scales)))
            out.append(merge_detections(first, parts, w, h, self.cfg.nms_threshold, self.cfg.max_faces))
        return out

    def letterboxed(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """The images letterboxed into the input only, nothing at native resolution: how a portrait is seen (an
        enrollment photo's subject is large; at native resolution its background only adds faint false faces,
        such as letters of a logo)."""
        self._check(images)
        return self._run(images)

    def _plan(
        self, image: np.ndarray, regions: np.ndarray | None
    ) -> tuple[bool, list[tuple[tuple[int, int, int, int], float]]]:
        """(detect the whole frame letterboxed, the windows to detect at native resolution) for one frame.
        Regions become windows no larger than one input (in frame px, before any enlargement for a small
        ``min_face_px``); a region larger than that (a face close to the camera,
        a wide moving area) is left to the letterboxed whole frame, where such faces are large enough, and what
        is small inside it to the next full detection."""
        if regions is None:
            return True, [(win, self.upscale) for win in self._native(image)]
        if not len(regions):
            return False, []
        h, w = image.shape[:2]
        iw, ih = self.cfg.input_size
        windows = region_windows(regions, w, h, max_side=(iw, ih), upscale=self.upscale)
        fit = [(win, scale) for win, scale in windows if win[2] - win[0] <= iw and win[3] - win[1] <= ih]
        return len(fit) < len(windows), fit

    @staticmethod
    def _window(
        image: np.ndarray, window: tuple[int, int, int, int], scale: float
    ) -> tuple[np.ndarray, float]:
        """``window`` of ``image`` resized by about ``scale``, and the scale it got."""
        x0, y0, x1, y1 = window
        crop = image[y0:y1, x0:x1]
        if scale == 1.0:
            return crop, 1.0
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(crop, size, interpolation=interp), size[0] / (x1 - x0)

    @staticmethod
    def _check(images: Sequence[np.ndarray]) -> None:
        for i, img in enumerate(images):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {i}: expected uint8 HxWx3 BGR, got {img.dtype} {img.shape}")

    def _run(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out: list[Detections] = []
        step = self.cfg.batch_size
        for start in range(0, len(images), step):
            out.extend(self._impl(images[start : start + step]))
        return out

    def _native(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The windows of ``image`` to detect at native resolution per ``detect.tiling`` (none: the letterboxed
        whole frame is enough): its tiles or the frame itself (``detect.native_input``). With a min_face_px that
        needs enlarging, every frame but with tiling off."""
        cfg = self.cfg
        h, w = image.shape[:2]
        if cfg.tiling == "off":
            return []
        if self.upscale == 1.0:
            if w <= cfg.input_size[0] and h <= cfg.input_size[1]:
                return []
            if cfg.tiling == "auto" and not needs_tiles(w, h, cfg.input_size, cfg.min_face_px, RESOLVES_PX):
                return []
        return native_windows(w, h, cfg.input_size, cfg.tile_overlap, cfg.native_input, self.upscale)

    def reset(self) -> None:
        """Detection keeps no per-stream state."""
