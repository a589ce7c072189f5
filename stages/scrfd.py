"""SCRFD through onnxruntime, in every export layout insightface's SCRFD class reads.

The layout is read from the model at load (:func:`read_layout`), decided as insightface decides it:

- outputs: 9 (strides 8, 16, 32; two anchors per location) or 15 (strides 8 to 128; one anchor), ordered scores
  of every stride, then boxes of every stride, then landmarks: ``[N, 1]``, ``[N, 4]``, ``[N, 10]`` for a stride,
  ``N = (H / stride) * (W / stride) * anchors`` for a ``W`` x ``H`` input. 6 and 10 outputs (no landmarks) are
  refused: a face without landmarks cannot be aligned.
- batch axis: outputs ``[B, N, C]`` (a run takes a batch, unless the input's batch is fixed at 1) or ``[N, C]``
  (insightface's model zoo, e.g. ``det_10g.onnx`` of ``buffalo_l``: one image per run).
- input ``[B, 3, H, W]``: H and W dynamic (a frame's letterboxed canvas is fitted to its aspect ratio, sides
  multiples of the largest stride) or fixed (frames letterboxed into exactly that size; an image seen at native
  resolution padded to it, or cut into overlapping tiles of it when larger).

What a layout does not explain (an output count, shape or order of another kind, an output whose size does not
match its stride's grid) is a one-line :class:`ModelError` naming the file, never an empty result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.types import Detections

from .config import DetectConfig
from .detector_backends import register
from .detector_io import finish, letterbox, padded, unscaled
from .errors import ModelError
from .onnx_session import onnx_session
from .tiling import merge_detections, tile_grid

__all__ = ["NATIVE_BATCH", "ScrfdDetector", "ScrfdLayout", "read_layout"]

NATIVE_BATCH = 16  # images of one size per detector run at native resolution
_WIDTHS = (1, 4, 10)  # last side of the score, box and landmark outputs
_KINDS = ("scores", "boxes", "landmarks")


@dataclass(frozen=True)
class ScrfdLayout:
    """How a SCRFD export is read: ``strides``, ``anchors`` per location, ``batch_axis`` (outputs ``[B, N, C]``
    rather than ``[N, C]``), ``batched`` (one run takes several images), ``fixed`` (the input's ``(w, h)``, None
    when dynamic)."""

    strides: tuple[int, ...]
    anchors: int
    batch_axis: bool
    batched: bool
    fixed: tuple[int, int] | None

    @property
    def multiple(self) -> int:
        """What the sides of a dynamic input are multiples of."""
        return max(32, self.strides[-1])


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in shape) + "]"


def read_layout(session, path: Path) -> ScrfdLayout:
    """The layout of a SCRFD model from its session's inputs and outputs; :class:`ModelError` (one line: the file,
    expected versus got) for one insightface does not read, or one without landmarks."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        got = ", ".join(f"{i.name} {_dims(i.shape)}" for i in inputs)
        raise ModelError(f"{path}: expected a SCRFD model with one input [B, 3, H, W], got {got}")
    count = len(outputs)
    if count in (6, 10):
        raise ModelError(
            f"{path}: a SCRFD model without landmarks ({count} outputs: scores and boxes) cannot align faces: "
            f"expected 9 or 15 outputs (scores, boxes and 5 landmarks per stride)"
        )
    if count not in (9, 15):
        raise ModelError(
            f"{path}: expected a SCRFD model with 9 or 15 outputs (scores, boxes and 5 landmarks for 3 or 5 "
            f"strides), got {count} outputs"
        )
    strides, anchors = ((8, 16, 32), 2) if count == 9 else ((8, 16, 32, 64, 128), 1)
    levels = len(strides)
    got = ", ".join(f"{o.name} {_dims(o.shape)}" for o in outputs)
    ranks = {len(o.shape) for o in outputs}
    if ranks not in ({2}, {3}):
        raise ModelError(f"{path}: expected every SCRFD output [N, C] or every one [B, N, C], got {got}")
    batch_axis = ranks == {3}
    expected = [width for width in _WIDTHS for _ in strides]
    if any(isinstance(o.shape[-1], int) and o.shape[-1] != c for o, c in zip(outputs, expected)):
        order = ", ".join(f"{levels} {kind} [..., {w}]" for kind, w in zip(_KINDS, _WIDTHS))
        raise ModelError(f"{path}: expected SCRFD outputs ordered {order}, got {got}")
    fixed_batch = [d for d in [shape[0]] + [o.shape[0] for o in outputs if batch_axis] if isinstance(d, int)]
    if any(d != 1 for d in fixed_batch):
        raise ModelError(f"{path}: expected a batch axis of 1 or dynamic, got input {_dims(shape)} and {got}")
    h, w = shape[2], shape[3]
    fixed = None
    if isinstance(h, int) or isinstance(w, int):
        multiple = max(32, strides[-1])
        if not (isinstance(h, int) and isinstance(w, int)) or h % multiple or w % multiple or min(h, w) <= 0:
            raise ModelError(
                f"{path}: expected an input height and width both dynamic or both fixed multiples of {multiple}, "
                f"got {_dims(shape)}"
            )
        fixed = (w, h)
    batched = batch_axis and not isinstance(shape[0], int)
    return ScrfdLayout(strides, anchors, batch_axis, batched, fixed)


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


Raw = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [N, 4], scores [N], landmarks [N, 5, 2] in input px


@register("scrfd")
class ScrfdDetector:
    """A SCRFD model of any layout :func:`read_layout` accepts: frames letterboxed (:meth:`__call__`) or images
    at native resolution (:meth:`native`). Calls may run at once (one onnxruntime session serves them all), each
    run on ``detect.threads / detect.workers`` intra-op threads."""

    concurrent = True

    def __init__(self, cfg: DetectConfig, path: Path) -> None:
        self.cfg, self.path = cfg, path
        threads = max(1, cfg.threads // cfg.workers)
        self.session = onnx_session(path, threads, cfg.device, "detector", provider=cfg.provider)
        self.layout = read_layout(self.session, path)
        self.input_name = self.session.get_inputs()[0].name
        self._centers: dict[tuple[int, int], list[np.ndarray]] = {}

    @property
    def input_size(self) -> tuple[int, int]:
        """The (w, h) frames are letterboxed into: the model's own when fixed, else ``detect.input_size``."""
        return self.layout.fixed or tuple(self.cfg.input_size)

    def __call__(
        self, images: Sequence[np.ndarray], threshold: float | None = None, min_size: float | None = None
    ) -> list[Detections]:
        """Frames letterboxed into the input (fitted to their aspect ratio when the input is dynamic); frames
        whose canvases have the same size share one run. ``threshold``/``min_size`` (default the config's): the
        lowest score and box side kept."""
        threshold = self.cfg.score_threshold if threshold is None else threshold
        boxed = [letterbox(img, self.input_size, fit=self.layout.fixed is None) for img in images]
        raws = self._detect([canvas for canvas, _ in boxed], threshold, max(1, len(images)))
        return [
            finish(*raw, self.cfg, scale, img.shape, min_size)
            for raw, (_, scale), img in zip(raws, boxed, images)
        ]

    def native(
        self, images: Sequence[np.ndarray], threshold: float, scales: Sequence[float]
    ) -> list[Detections]:
        """Images as they are (padded right/bottom to the input; with a fixed input, one larger than it is cut
        into overlapping tiles of it, merged as :func:`stages.tiling.merge_detections` merges tiles); ``scales``:
        each was resized by that much, and its detections are returned in the coordinates before."""
        owners, pieces = [], []
        for i, img in enumerate(images):
            for x0, y0, x1, y1 in self._pieces(img):
                owners.append((i, (x0, y0, x1, y1)))
                pieces.append(img[y0:y1, x0:x1])
        raws = self._detect(pieces, threshold, NATIVE_BATCH)
        out = []
        for i, img in enumerate(images):
            mine = [(win, raw) for (owner, win), raw in zip(owners, raws) if owner == i]
            if len(mine) == 1:
                raw = mine[0][1]
            else:
                parts = [(win, Detections(*raw)) for win, raw in mine]
                h, w = img.shape[:2]
                merged = merge_detections(
                    Detections.empty(), parts, w, h, self.cfg.nms_threshold, self.cfg.max_faces
                )
                raw = merged.xyxy, merged.score, merged.landmarks
            out.append(finish(*raw, self.cfg, scales[i], unscaled(img.shape, scales[i])))
        return out

    def _pieces(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The parts of ``image`` run one by one: the image, or tiles of a fixed input it exceeds."""
        h, w = image.shape[:2]
        fixed = self.layout.fixed
        if fixed is None or (w <= fixed[0] and h <= fixed[1]):
            return [(0, 0, w, h)]
        return tile_grid(w, h, fixed, min(self.cfg.tile_overlap, min(fixed) - 1))

    def _detect(self, images: Sequence[np.ndarray], threshold: float, batch: int) -> list[Raw]:
        """Raw detections of each image (padded to the input: the fixed size, or multiples of the largest
        stride); images of one padded size share runs of up to ``batch`` where the model takes a batch."""
        fixed, multiple = self.layout.fixed, self.layout.multiple
        canvases = [padded(img, fixed, multiple) for img in images]
        out: list[Raw | None] = [None] * len(images)
        step = batch if self.layout.batched else 1
        for shape in dict.fromkeys(c.shape for c in canvases):
            group = [i for i, c in enumerate(canvases) if c.shape == shape]
            for start in range(0, len(group), step):
                part = group[start : start + step]
                outs = self.session.run(None, {self.input_name: _blob([canvases[i] for i in part])})
                for b, i in enumerate(part):
                    mine = [o[b] for o in outs] if self.layout.batch_axis else outs
                    out[i] = self._decode(mine, shape, threshold)
        return out

    def _grid(self, w: int, h: int) -> list[np.ndarray]:
        """Anchor centres ``[N, 2]`` (x, y) per stride for a ``w`` x ``h`` input (cached per size)."""
        if (w, h) not in self._centers:
            levels = []
            for stride in self.layout.strides:
                ys, xs = np.mgrid[: h // stride, : w // stride]
                grid = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
                levels.append(np.repeat(grid, self.layout.anchors, axis=0))
            self._centers[(w, h)] = levels
        return self._centers[(w, h)]

    def _decode(self, outs: Sequence[np.ndarray], shape: tuple[int, ...], threshold: float) -> Raw:
        """Boxes, scores and landmarks above ``threshold`` from one image's outputs (batch axis removed) for an
        input of ``shape`` (h, w, 3); an output that does not fit its stride's grid is a :class:`ModelError`."""
        h, w = shape[:2]
        levels = len(self.layout.strides)
        boxes, scores, kps = [], [], []
        for level, (stride, centres) in enumerate(zip(self.layout.strides, self._grid(w, h))):
            score, dist, pts = (np.asarray(outs[level + k * levels]) for k in range(3))
            n = len(centres)
            if (score.size, dist.size, pts.size) != (n, 4 * n, 10 * n):
                got = ", ".join(f"{kind} {list(o.shape)}" for kind, o in zip(_KINDS, (score, dist, pts)))
                raise ModelError(
                    f"{self.path}: for a {w}x{h} input expected {n} anchors at stride {stride} "
                    f"(scores [{n}, 1], boxes [{n}, 4], landmarks [{n}, 10]), got {got}"
                )
            hit = np.flatnonzero(score.reshape(-1) >= threshold)
            if not hit.size:
                continue
            at = centres[hit]
            dist = dist.reshape(-1, 4)[hit] * stride
            boxes.append(np.concatenate([at - dist[:, :2], at + dist[:, 2:]], axis=1))
            kps.append(pts.reshape(-1, 5, 2)[hit] * stride + at[:, None, :])
            scores.append(score.reshape(-1)[hit])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
