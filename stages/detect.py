"""Face detection: SCRFD through onnxruntime (default, batched over frames, every export layout insightface reads:
:mod:`stages.scrfd`) or OpenCV YuNet.

Frames of any size are letterboxed (resized keeping the aspect ratio, padded right/bottom) into the input size
(``detect.input_size``, or a SCRFD model's own fixed size), so frames of different sizes share one batch. With
``detect.tiling`` the frame is also detected in overlapping tiles at its own resolution, so that small faces are not
shrunk below what the detector resolves (:mod:`stages.tiling`). Landmarks come in the ArcFace order: left eye,
right eye, nose, left mouth corner, right mouth corner, as seen in the image.

Every detector checks itself once when built: it must find the face of a photo shipped with the package
(``stages/data/astronaut_face.jpg``), or it refuses to run (:class:`ModelError` naming the model file), so a model
whose outputs are misread never runs blind.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from core.types import Detections

from .config import DetectConfig
from .detect_runs import RunPool, shares
from .detector_backends import create_backend
from .detector_io import letterbox
from .errors import ModelError
from .scrfd import ScrfdDetector  # noqa: F401 - registers backend "scrfd"
from .tiling import (
    SMALL_FACE_PX,
    letterbox_scale,
    merge_detections,
    native_windows,
    nms,
    region_windows,
    sees_native,
    window_scale,
)
from .yunet import YuNetDetector  # noqa: F401 - registers backend "yunet"

__all__ = [
    "CHECK_SCORE",
    "FaceDetector",
    "check_image",
    "finds_the_face",
    "letterbox",
    "nms",
    "resolve_detector_model",
]

logger = logging.getLogger(__name__)

FINDS_PX = 12.0  # px at the detector's input from which they find most faces (10 px: a third at best)
# min_face_px below FINDS_PX: windows around small faces are enlarged at most MAX_UPSCALE times; a small face
# scored from CANDIDATE_SCORE is looked at again enlarged (at most MAX_CANDIDATES a frame, the best first), in a
# window reaching CANDIDATE_MARGIN of its size around it (at least MIN_MARGIN_PX)
MAX_UPSCALE = 2.0
CANDIDATE_SCORE = 0.1
MAX_CANDIDATES = 32
CANDIDATE_MARGIN = 1.0
MIN_MARGIN_PX = 16.0
Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame px
Pass = tuple[int, Window | None, float, float | None]  # frame, window (None: letterboxed), scale, threshold
Part = tuple[Window, float, Detections]  # window, the scale it was seen at, its detections in window px
CHECK_IMAGE = "astronaut_face.jpg"  # under stages/data: the face every detector must find when built
CHECK_SCORE = 0.5  # the score it must find it at (SCRFD-500M: 0.81, SCRFD-2.5G: 0.76, YuNet: 0.94)


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


@functools.cache
def check_image() -> np.ndarray:
    """The self-check photo shipped with the package (BGR uint8, 160x160, one frontal face in the middle)."""
    data = resources.files("stages").joinpath("data", CHECK_IMAGE).read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    image.flags.writeable = False
    return image


def finds_the_face(found: Detections, image_shape: tuple[int, ...]) -> bool:
    """Whether one of ``found`` is the face in the middle of the self-check image: its box holds the image's
    centre and its five landmarks."""
    h, w = image_shape[:2]
    box, pts = found.xyxy, found.landmarks
    centred = (box[:, 0] < w / 2) & (box[:, 2] > w / 2) & (box[:, 1] < h / 2) & (box[:, 3] > h / 2)
    inside = (pts >= box[:, None, :2]).all(axis=(1, 2)) & (pts <= box[:, None, 2:]).all(axis=(1, 2))
    return bool((centred & inside).any())


class FaceDetector:
    """Detects faces in batches of BGR uint8 frames; one :class:`Detections` per frame."""

    def __init__(self, cfg: DetectConfig) -> None:
        self.cfg = cfg
        path = resolve_detector_model(cfg.model, cfg.backend)
        self.model_path = path
        self._impl = create_backend(cfg, path)
        # several runs at once where the backend allows it (detect.workers; stages.detect_runs)
        self._runs = RunPool(cfg.workers if getattr(self._impl, "concurrent", False) else 1)
        self.input_size: tuple[int, int] = self._impl.input_size  # a fixed SCRFD input wins over the config's
        if self.input_size != tuple(cfg.input_size):
            logger.warning(
                "detector %s has a fixed input of %dx%d: frames are letterboxed into it, not into "
                "detect.input_size %dx%d",
                path.name,
                *self.input_size,
                *cfg.input_size,
            )
        # faces asked for below what the detector finds reliably: windows around small faces are enlarged
        self.upscale = MAX_UPSCALE if cfg.min_face_px < FINDS_PX else 1.0
        self.self_check()
        logger.info("detector %s from %s, input %sx%s", cfg.backend, path, *self.input_size)

    def self_check(self) -> None:
        """Run once on the photo shipped for it (one letterboxed run at score CHECK_SCORE, no size limit): a
        detector that does not find its face refuses to run (:class:`ModelError`)."""
        image = check_image()
        found = self._impl([image], threshold=CHECK_SCORE, min_size=0.0)[0]
        if not finds_the_face(found, image.shape):
            raise ModelError(
                f"detector {self.model_path} does not see: it finds no face at score >= {CHECK_SCORE} on the "
                f"self-check photo {CHECK_IMAGE} ({len(found)} detections); expected a {self.cfg.backend} face "
                f"detector whose outputs read as boxes, scores and 5 landmarks"
            )

    def detect(
        self, images: Sequence[np.ndarray], regions: Sequence[np.ndarray | None] | None = None
    ) -> list[Detections]:
        """One :class:`Detections` per frame. ``regions`` (one per frame, see :mod:`stages.schedule`): None
        detects the whole frame (and at native resolution where ``detect.tiling`` asks); regions ``[K, 5]`` (or
        ``[K, 4]``) limit detection to windows around them (:func:`stages.tiling.region_windows`; nothing when
        there is none). With a ``min_face_px`` below what the detector finds reliably, weak small faces (scored
        from CANDIDATE_SCORE) are looked at again in enlarged windows (:meth:`_refine`): the image is enlarged
        only where a small face may be, never the whole frame. The passes of all frames run in ``detect.workers``
        shares at once (:mod:`stages.detect_runs`)."""
        self._check(images)
        cfg = self.cfg
        low = CANDIDATE_SCORE if self.upscale > 1.0 else None
        regions = [None] * len(images) if regions is None else regions
        thresholds = [
            max(0.0, cfg.score_threshold - (cfg.region_score_slack if r is not None else 0.0))
            for r in regions
        ]
        items: list[Pass] = []
        for i, (img, region) in enumerate(zip(images, regions)):
            whole, windows = self._plan(img, region)
            cut = thresholds[i] if low is None else min(low, thresholds[i])
            items += [(i, None, 1.0, low)] if whole else []
            items += [(i, win, scale, cut) for win, scale in windows]
        firsts = [Detections.empty() for _ in images]
        parts: list[list[Part]] = [[] for _ in images]
        for (i, win, _, _), (dets, scale) in zip(items, self._passes(images, items)):
            if win is None:
                firsts[i] = dets
            else:
                parts[i].append((win, scale, dets))
        if low is not None:
            firsts, parts = self._refine(images, firsts, parts, thresholds)
        out = []
        for img, first, found in zip(images, firsts, parts):
            if not found:
                out.append(first)
                continue
            h, w = img.shape[:2]
            windows = [(win, d) for win, _, d in found]
            out.append(merge_detections(first, windows, w, h, cfg.nms_threshold, cfg.max_faces))
        return out

    def _passes(self, images: Sequence[np.ndarray], items: Sequence[Pass]) -> list[tuple[Detections, float]]:
        """Each pass's detections and the scale its window was seen at: ``(frame, None, 1, threshold)`` the frame
        letterboxed, ``(frame, window, scale, threshold)`` a window resized by about ``scale``; split into shares of
        about equal pixels run at once."""
        costs = [self._cost(images[i], win, scale) for i, win, scale, _ in items]
        groups = shares(costs, self._runs.workers)
        tasks = [functools.partial(self._share, images, [items[k] for k in group]) for group in groups]
        out: list[tuple[Detections, float]] = [(Detections.empty(), 1.0)] * len(items)
        for group, results in zip(groups, self._runs.run(tasks)):
            for k, result in zip(group, results):
                out[k] = result
        return out

    def _share(self, images: Sequence[np.ndarray], items: Sequence[Pass]) -> list[tuple[Detections, float]]:
        """One share of :meth:`_passes`, run on one thread: its whole frames in one batched call, its windows in
        one call per threshold."""
        out: list[tuple[Detections, float]] = [(Detections.empty(), 1.0)] * len(items)
        wholes = [n for n, item in enumerate(items) if item[1] is None]
        if wholes:
            found = self._run([images[items[n][0]] for n in wholes], items[wholes[0]][3])
            for n, dets in zip(wholes, found):
                out[n] = (dets, 1.0)
        windows = [n for n, item in enumerate(items) if item[1] is not None]
        for cut in dict.fromkeys(items[n][3] for n in windows):
            mine = [n for n in windows if items[n][3] == cut]
            crops, scales = zip(*(self._window(images[items[n][0]], items[n][1], items[n][2]) for n in mine))
            for n, dets, scale in zip(mine, self._impl.native(crops, cut, scales), scales):
                out[n] = (dets, scale)
        return out

    def _cost(self, image: np.ndarray, window: tuple[int, int, int, int] | None, scale: float) -> float:
        """About the pixels a pass runs the detector on."""
        if window is None:
            h, w = image.shape[:2]
            return w * h * letterbox_scale(w, h, self.input_size) ** 2
        x0, y0, x1, y1 = window
        return (x1 - x0) * (y1 - y0) * scale * scale

    def _refine(
        self,
        images: Sequence[np.ndarray],
        firsts: list[Detections],
        parts: list[list[Part]],
        thresholds: Sequence[float],
    ) -> tuple[list[Detections], list[list[Part]]]:
        """Each frame's passes cut to their thresholds, plus its windows around weak small faces
        (:meth:`_candidates`) detected enlarged at the frame's threshold, all frames' at once."""
        items: list[Pass] = []
        for i, image in enumerate(images):
            firsts[i], parts[i], windows = self._candidates(image, firsts[i], parts[i], thresholds[i])
            items += [(i, win, scale, thresholds[i]) for win, scale in windows]
        for (i, win, _, _), (dets, scale) in zip(items, self._passes(images, items)):
            parts[i].append((win, scale, dets))
        return firsts, parts

    def _candidates(
        self, image: np.ndarray, whole: Detections, parts: list[Part], threshold: float
    ) -> tuple[Detections, list[Part], list[tuple[tuple[int, int, int, int], float]]]:
        """The passes' detections found from CANDIDATE_SCORE (``whole``: the letterboxed frame's, frame px;
        ``parts``: (window, the scale it was seen at, its detections in window px)) cut to their thresholds
        (``detect.score_threshold``; windows: ``threshold``), and the windows around the weak faces below
        SMALL_FACE_PX that a larger scale may resolve (at most MAX_CANDIDATES, the best scored first;
        :func:`stages.tiling.window_scale`): the weak score says a face may be there."""
        cfg = self.cfg
        h, w = image.shape[:2]
        seen = letterbox_scale(w, h, self.input_size)
        passes = [(whole, cfg.score_threshold, seen, (0, 0))]
        passes += [(dets, threshold, scale, win[:2]) for win, scale, dets in parts]
        kept, strong_boxes, weak_boxes, weak_scores = [], [], [], []
        for dets, cut, scale, (x0, y0) in passes:
            strong = dets.score >= cut
            kept.append(Detections(dets.xyxy[strong], dets.score[strong], dets.landmarks[strong]))
            boxes = dets.xyxy + np.asarray([x0, y0, x0, y0], np.float32)
            side = (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
            larger = np.asarray([window_scale(s, self.upscale) > scale * 1.01 for s in side], bool)
            worth = ~strong & (side < SMALL_FACE_PX) & larger
            strong_boxes.append(boxes[strong])
            weak_boxes.append(boxes[worth])
            weak_scores.append(dets.score[worth])
        parts = [(win, scale, d) for (win, scale, _), d in zip(parts, kept[1:])]
        boxes, scores = np.concatenate(weak_boxes), np.concatenate(weak_scores)
        strong = np.concatenate(strong_boxes)
        if len(boxes) and len(strong):  # a face already found there: nothing to look at again
            centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
            inside = (centre >= strong[None, :, :2]) & (centre <= strong[None, :, 2:])
            mask = ~inside.all(axis=2).any(axis=1)
            boxes, scores = boxes[mask], scores[mask]
        if not len(boxes):
            return kept[0], parts, []
        boxes = boxes[np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]]
        side = (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
        grow = np.maximum(side * CANDIDATE_MARGIN, MIN_MARGIN_PX)[:, None]
        regions = np.column_stack([boxes[:, :2] - grow, boxes[:, 2:] + grow, side])
        regions[:, [0, 2]] = regions[:, [0, 2]].clip(0, w)
        regions[:, [1, 3]] = regions[:, [1, 3]].clip(0, h)
        return kept[0], parts, region_windows(regions, w, h, max_side=self.input_size, upscale=self.upscale)

    def letterboxed(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """The images letterboxed into the input only, nothing at native resolution: how a portrait is seen (an
        enrollment photo's subject is large; at native resolution its background only adds faint false faces,
        such as letters of a logo). Several images run in shares side by side."""
        self._check(images)
        return [dets for dets, _ in self._passes(images, [(i, None, 1.0, None) for i in range(len(images))])]

    def _plan(
        self, image: np.ndarray, regions: np.ndarray | None
    ) -> tuple[bool, list[tuple[tuple[int, int, int, int], float]]]:
        """(detect the whole frame letterboxed, the windows to detect at native resolution) for one frame.
        Regions become windows no larger than one input (in frame px, before any enlargement for a small
        ``min_face_px``); a region larger than that (a face close to the camera,
        a wide moving area) is left to the letterboxed whole frame, where such faces are large enough, and what
        is small inside it to the next full detection."""
        if regions is None:
            return True, [(win, 1.0) for win in self._native(image)]
        if not len(regions):
            return False, []
        h, w = image.shape[:2]
        iw, ih = self.input_size
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

    def _run(self, images: Sequence[np.ndarray], threshold: float | None = None) -> list[Detections]:
        """The images letterboxed, in batches of ``detect.batch_size``, from ``threshold`` (default: the config's)."""
        out: list[Detections] = []
        step = self.cfg.batch_size
        for start in range(0, len(images), step):
            out.extend(self._impl(images[start : start + step], threshold=threshold))
        return out

    def _native(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The windows of ``image`` to detect at native resolution per ``detect.tiling`` (none: the letterboxed
        whole frame is enough): its tiles or the frame itself (``detect.native_input``), never enlarged."""
        cfg = self.cfg
        h, w = image.shape[:2]
        if not sees_native(w, h, self.input_size, cfg.tiling, cfg.min_face_px):
            return []
        return native_windows(
            w, h, self.input_size, cfg.tile_overlap, cfg.native_input, parts=self._runs.workers
        )

    def close(self) -> None:
        """Stop the threads of the runs side by side (the detector still works after, one run at a time)."""
        self._runs.close()

    def reset(self) -> None:
        """Detection keeps no per-stream state."""
