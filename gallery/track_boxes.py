"""A track's face box on every frame it was seen, as stored in ``tracks.boxes``: little-endian float32 rows
``[time, x1, y1, x2, y2]`` (``[K, 5]``), ``time`` in seconds within the source (the base of ``start_time``), boxes
in pixels of the source frame, rows in time order."""

from __future__ import annotations

import numpy as np

from gallery.errors import MatchLogError

__all__ = ["box_at", "pack_boxes", "unpack_boxes"]

ROW = 5


def pack_boxes(boxes: np.ndarray) -> bytes:
    """``[K, 5]`` rows (time, x1, y1, x2, y2) as stored; rows are sorted by time."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != ROW or not np.isfinite(arr).all():
        raise MatchLogError(
            f"track boxes: expected finite [K, {ROW}] rows (time, x1, y1, x2, y2), got {arr.shape}"
        )
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    return arr.astype("<f4").tobytes()


def unpack_boxes(data: bytes | None) -> np.ndarray:
    """The stored rows as float32 ``[K, 5]`` (``[0, 5]`` for none)."""
    if not data:
        return np.zeros((0, ROW), np.float32)
    if len(data) % (4 * ROW):
        raise MatchLogError(f"track boxes: expected a multiple of {4 * ROW} bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<f4").reshape(-1, ROW).astype(np.float32)


def box_at(boxes: np.ndarray, t: float, gap_s: float = 0.5) -> np.ndarray | None:
    """The track's box ``[4]`` at source time ``t``: linear between the two rows around ``t`` when they are at most
    ``gap_s`` apart, the nearest row within ``gap_s / 2`` otherwise, else None (the track was not seen then)."""
    if len(boxes) == 0:
        return None
    times = boxes[:, 0]
    i = int(np.searchsorted(times, t))
    if 0 < i < len(times) and times[i] - times[i - 1] <= gap_s:
        a, b = boxes[i - 1], boxes[i]
        w = 0.0 if b[0] == a[0] else (t - a[0]) / (b[0] - a[0])
        return (a[1:] + w * (b[1:] - a[1:])).astype(np.float32)
    near = [j for j in (i - 1, i) if 0 <= j < len(times)]
    j = min(near, key=lambda k: abs(times[k] - t))
    return boxes[j, 1:].copy() if abs(times[j] - t) <= gap_s / 2 else None
