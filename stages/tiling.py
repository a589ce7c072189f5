"""Detection at native resolution for small faces: the frame in overlapping tiles or as one input, plus the whole
frame letterboxed.

A detector letterboxes its input: a 1920x1080 frame into a 640x640 input is shrunk three times, and a 16-pixel face
becomes 5 pixels, below what SCRFD resolves. Tiles of the detector's own input size cut from the frame keep faces at
their native size; so does the whole frame given as one input (padded to a multiple of 32), which costs fewer pixels
than the tiles wherever they overlap or overhang (1920x1080: 2.1 against 3.3 million, 4K: 8.4 against 11.5) and cuts
no face (:func:`native_windows` picks the cheaper). Each tile is a full input size (the last tile of a row or column
is moved back to end at the frame's edge), neighbouring tiles overlap by at least ``overlap`` pixels, so a face
smaller than the overlap lies whole inside at least one tile. A detection touching a tile's inner edge (an edge that
is not the frame's) is dropped: it is a cut face, found whole by the neighbour. The whole frame, letterboxed as
without tiling, is detected too (large faces); all detections are merged by one non-maximum suppression.
"""

from __future__ import annotations

import math

import numpy as np

from core.types import Detections

__all__ = [
    "merge_detections",
    "native_windows",
    "letterbox_scale",
    "needs_tiles",
    "nms",
    "pad32",
    "region_windows",
    "sees_native",
    "tile_grid",
    "tile_offsets",
    "window_scale",
]

EDGE_MARGIN = 2.0  # px: a box this close to a tile's inner edge was cut by it
WINDOW_GAP = 32.0  # px: regions closer than this share one detection window
# px: a window's smallest side (a face needs context around it to score as in the full frame)
MIN_WINDOW = 128
FACE_PX = 96.0  # px: a window around a tracked face is scaled so that the face is about this size
SMALL_FACE_PX = 24.0  # px: a smaller face's window is enlarged toward this size (at most ``upscale`` times)
RESOLVES_PX = 10.0  # about the smallest face (px at the detector's input) SCRFD and YuNet find
MAX_FRAME_PIXELS = 4096 * 4096  # native_input auto: larger frames are tiled (bounded detector memory)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def tile_offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of side ``tile`` along an axis of ``length`` px, overlapping by >= ``overlap``."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    count = math.ceil((length - tile) / step) + 1
    stride = (length - tile) / (count - 1)  # spread evenly: every overlap >= the requested one
    return [round(i * stride) for i in range(count)]


def tile_grid(
    width: int, height: int, tile: tuple[int, int], overlap: int
) -> list[tuple[int, int, int, int]]:
    """Tiles ``(x0, y0, x1, y1)`` covering a ``width`` x ``height`` frame (clipped to it when it is smaller)."""
    tw, th = tile
    return [
        (x, y, min(x + tw, width), min(y + th, height))
        for y in tile_offsets(height, th, overlap)
        for x in tile_offsets(width, tw, overlap)
    ]


def letterbox_scale(width: int, height: int, input_size: tuple[int, int]) -> float:
    """How much letterboxing shrinks (or enlarges) a ``width`` x ``height`` frame to fit ``input_size``."""
    return min(input_size[0] / max(width, 1), input_size[1] / max(height, 1))


def needs_tiles(
    width: int, height: int, input_size: tuple[int, int], min_face_px: float, resolves_px: float
) -> bool:
    """Whether letterboxing a frame into ``input_size`` shrinks a ``min_face_px`` face below ``resolves_px``."""
    scale = letterbox_scale(width, height, input_size)
    return min_face_px * scale < resolves_px and (width > input_size[0] or height > input_size[1])


def sees_native(
    width: int, height: int, input_size: tuple[int, int], tiling: str, min_face_px: float
) -> bool:
    """Whether ``detect.tiling`` has a full detection see a ``width`` x ``height`` frame at its own resolution
    too (on: whenever it is larger than the input; auto: where letterboxing would shrink a ``min_face_px`` face
    below RESOLVES_PX)."""
    if tiling == "off" or (width <= input_size[0] and height <= input_size[1]):
        return False
    return tiling == "on" or needs_tiles(width, height, input_size, min_face_px, RESOLVES_PX)


def pad32(side: int) -> int:
    """``side`` rounded up to a multiple of 32 (at least 32): what detector inputs are made of."""
    return max(32, -(-side // 32) * 32)


def native_windows(
    width: int,
    height: int,
    input_size: tuple[int, int],
    overlap: int,
    mode: str = "auto",
    upscale: float = 1.0,
    parts: int = 1,
) -> list[tuple[int, int, int, int]]:
    """What to detect at native resolution (enlarged ``upscale`` times) in a ``width`` x ``height`` frame: its
    tiles (``mode`` tiles; each the input size once enlarged), the frame as one window (frame), or whichever has
    fewer padded pixels (auto; tiles above MAX_FRAME_PIXELS). ``parts`` > 1: the frame as that many bands across
    its longer side, overlapping as tiles do, to be detected at once (:mod:`stages.detect_runs`)."""
    tile = (max(32, round(input_size[0] / upscale)), max(32, round(input_size[1] / upscale)))
    tiles = tile_grid(width, height, tile, min(overlap, min(tile) - 1))
    bands = _bands(width, height, parts, overlap)
    frame_px = sum(
        pad32(round((x1 - x0) * upscale)) * pad32(round((y1 - y0) * upscale)) for x0, y0, x1, y1 in bands
    )
    tiles_px = len(tiles) * input_size[0] * input_size[1]
    if mode == "frame" or (mode == "auto" and frame_px < tiles_px and frame_px <= MAX_FRAME_PIXELS):
        return bands
    return tiles


def _bands(width: int, height: int, parts: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """The frame in ``parts`` bands across its longer side, neighbours sharing at least ``overlap`` px (one band,
    the frame, when a band would be narrower than twice the overlap)."""
    side = max(width, height)
    band = -(-(side + (parts - 1) * overlap) // max(parts, 1))
    if parts <= 1 or band < 2 * overlap or band >= side:
        return [(0, 0, width, height)]
    size = (band, height) if width >= height else (width, band)
    return tile_grid(width, height, size, overlap)


def _grow32(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """``[lo, hi]`` grown to a side that is a multiple of 32 (at least MIN_WINDOW), kept inside ``[0, limit]``."""
    lo, hi = math.floor(lo), math.ceil(hi)
    side = min(max(MIN_WINDOW, -(-(hi - lo) // 32) * 32), limit)
    start = min(max(0, (lo + hi - side) // 2), limit - side)
    return start, start + side


def _merge(boxes: np.ndarray, gap: float, max_side: tuple[float, float]) -> np.ndarray:
    """Boxes ``[K, 5]`` (xyxy, face) merged into their union while two of the same kind (face size or none) lie
    within ``gap`` px and the union fits ``max_side``: passes over the boxes, each box merged into the first kept
    one it may join, until a pass merges nothing (then no two kept boxes may join)."""
    merged = True
    while merged and len(boxes) > 1:
        merged, kept, m = False, np.empty_like(boxes), 0
        for box in boxes:
            k = kept[:m]
            near = (
                (k[:, 0] - gap < box[2])
                & (box[0] - gap < k[:, 2])
                & (k[:, 1] - gap < box[3])
                & (box[1] - gap < k[:, 3])
            )
            fits = (np.maximum(k[:, 2], box[2]) - np.minimum(k[:, 0], box[0]) <= max_side[0]) & (
                np.maximum(k[:, 3], box[3]) - np.minimum(k[:, 1], box[1]) <= max_side[1]
            )
            joins = np.flatnonzero(near & fits & ((k[:, 4] > 0) == (box[4] > 0)))
            if not len(joins):
                kept[m], m = box, m + 1
                continue
            j = joins[0]
            kept[j, :2] = np.minimum(kept[j, :2], box[:2])
            kept[j, 2:4] = np.maximum(kept[j, 2:4], box[2:4])
            kept[j, 4] = min(kept[j, 4], box[4])
            merged = True
        boxes = kept[:m]
    return boxes


def region_windows(
    regions: np.ndarray,
    width: int,
    height: int,
    gap: float = WINDOW_GAP,
    max_side: tuple[float, float] = (math.inf, math.inf),
    upscale: float = 1.0,
) -> list[tuple[tuple[int, int, int, int], float]]:
    """Windows ``((x0, y0, x1, y1), scale)`` to detect in: the regions ``[K, 4]`` or ``[K, 5]`` (the fifth column:
    the side of the face expected there, 0 or absent for any size) merged while they overlap or lie within ``gap``
    px of each other and the merged box stays within ``max_side`` (width, height), each grown to sides that are
    multiples of 32, at least ``MIN_WINDOW`` (in the frame: a tiny face needs that much around it even when
    enlarged). Regions with a face size merge only with each other, and their window is scaled by
    :func:`window_scale` of its smallest face; the others are seen at native resolution."""
    rows = np.asarray(regions, np.float64)
    rows = rows.reshape(-1, rows.shape[-1]) if rows.size else np.zeros((0, 5))
    faces = rows[:, 4] if rows.shape[1] == 5 else np.zeros(len(rows))
    boxes = _merge(np.column_stack([rows[:, :4], faces]), gap, max_side)
    windows = []
    for x0, y0, x1, y1, face in boxes:
        if x1 <= x0 or y1 <= y0:
            continue
        scale = window_scale(face, upscale) if face > 0 else 1.0
        wx0, wx1 = _grow32(x0, x1, width)
        wy0, wy1 = _grow32(y0, y1, height)
        windows.append(((wx0, wy0, wx1, wy1), scale))
    return windows


def window_scale(face: float, upscale: float) -> float:
    """The scale of a window around a face of side ``face`` px: shrunk so that a large face is about FACE_PX,
    native from SMALL_FACE_PX to FACE_PX, and a smaller one enlarged toward SMALL_FACE_PX, at most ``upscale``
    times (1: never enlarged). Large faces are never enlarged: the detector scores some of them lower so."""
    if face >= FACE_PX:
        return FACE_PX / face
    return min(upscale, max(1.0, SMALL_FACE_PX / max(face, 1e-6)))


def _shift(dets: Detections, x0: int, y0: int) -> Detections:
    offset = np.asarray([x0, y0], np.float32)
    return Detections(dets.xyxy + np.tile(offset, 2), dets.score, dets.landmarks + offset)


def _whole(dets: Detections, tile: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """Mask of the detections (frame coordinates) not cut by an inner edge of ``tile``."""
    x0, y0, x1, y1 = tile
    b = dets.xyxy
    keep = np.ones(len(dets), bool)
    if x0 > 0:
        keep &= b[:, 0] > x0 + EDGE_MARGIN
    if y0 > 0:
        keep &= b[:, 1] > y0 + EDGE_MARGIN
    if x1 < width:
        keep &= b[:, 2] < x1 - EDGE_MARGIN
    if y1 < height:
        keep &= b[:, 3] < y1 - EDGE_MARGIN
    return keep


def merge_detections(
    whole_frame: Detections,
    tiles: list[tuple[tuple[int, int, int, int], Detections]],
    width: int,
    height: int,
    nms_threshold: float,
    max_faces: int,
) -> Detections:
    """The frame's detections from its whole-frame pass and its tiles (tile coordinates), by one NMS."""
    parts = [whole_frame]
    for tile, dets in tiles:
        if len(dets):
            shifted = _shift(dets, tile[0], tile[1])
            mask = _whole(shifted, tile, width, height)
            parts.append(Detections(shifted.xyxy[mask], shifted.score[mask], shifted.landmarks[mask]))
    boxes = np.concatenate([p.xyxy for p in parts])
    if not len(boxes):
        return Detections.empty()
    scores = np.concatenate([p.score for p in parts])
    landmarks = np.concatenate([p.landmarks for p in parts])
    keep = nms(boxes, scores, nms_threshold)[:max_faces]
    return Detections(boxes[keep], scores[keep], landmarks[keep])
