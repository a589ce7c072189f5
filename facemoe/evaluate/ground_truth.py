"""The ground truth of ``eval video``: who is on screen in which video, when, and where in the frame.

A CSV with one row per person and time span (``video, identity, start_s, end_s``; empty times mean the whole
video), optionally with the region of the frame where that person's face is (``x_min, x_max, y_min, y_max``:
pixel bounds of the face-box centre; empty = unbounded). Videos are named by file name.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .data import ProtocolError

__all__ = ["GT_COLUMNS", "SHOWN", "GroundTruthSpan", "read_ground_truth", "video_keys"]

logger = logging.getLogger(__name__)

GT_COLUMNS = ("video", "identity", "start_s", "end_s", "x_min", "x_max", "y_min", "y_max")
_REGION = ("x_min", "x_max", "y_min", "y_max")
_REQUIRED = ("video", "identity")
SHOWN = 3  # names listed in an error message


@dataclass(frozen=True)
class GroundTruthSpan:
    """``identity`` is on screen in ``video`` (a file name) from ``start`` to ``end`` seconds (``end`` may be inf),
    with the centre of the face box inside ``x_min..x_max``, ``y_min..y_max`` (pixels; unbounded by default)."""

    video: str
    identity: str
    start: float
    end: float
    x_min: float = -math.inf
    x_max: float = math.inf
    y_min: float = -math.inf
    y_max: float = math.inf

    def holds(self, centre: tuple[float, float] | None) -> bool:
        """Whether a face centre ``(x, y)`` lies in the region (an unknown centre is not excluded)."""
        if centre is None:
            return True
        return self.x_min <= centre[0] <= self.x_max and self.y_min <= centre[1] <= self.y_max


def _number(raw: str, what: str, unit: str = "seconds") -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ProtocolError(f"{what}: expected {unit} (a number) or an empty cell, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ProtocolError(f"{what}: expected a finite number of {unit} >= 0, got {raw!r}")
    return value


def read_ground_truth(path: str | Path) -> list[GroundTruthSpan]:
    """Read the ground-truth CSV: columns ``video, identity`` and optionally ``start_s, end_s`` and ``x_min, x_max,
    y_min, y_max`` (any case, any order, no other columns). ``video`` is matched by file name; an empty start means
    0, an empty end the end of the video. Times are seconds from the video's first frame, as ``process`` reports
    them; the region bounds the face-box centre in pixels of the frame as decoded."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"ground-truth file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = [(c or "").strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in _REQUIRED if c not in columns]
        unknown = [c for c in columns if c not in GT_COLUMNS]
        if missing or unknown or len(set(columns)) != len(columns):
            raise ProtocolError(
                f"{path}: expected columns {', '.join(GT_COLUMNS)} (all but video and identity "
                f"optional), got {', '.join(columns) or 'none'}"
            )
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    spans = []
    for line, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue  # blank line
        empty = [c for c in _REQUIRED if not row.get(c)]
        if empty:
            raise ProtocolError(
                f"{path} line {line}: expected values for {', '.join(empty)}, got empty cells"
            )
        start = _number(row.get("start_s", ""), f"{path} line {line} start_s")
        end = _number(row.get("end_s", ""), f"{path} line {line} end_s")
        start = 0.0 if start is None else start
        end = math.inf if end is None else end
        if end <= start:
            raise ProtocolError(f"{path} line {line}: expected end_s after start_s, got {start:g} to {end:g}")
        bounds = [_number(row.get(c, ""), f"{path} line {line} {c}", "pixels") for c in _REGION]
        region = [(-math.inf if i % 2 == 0 else math.inf) if b is None else b for i, b in enumerate(bounds)]
        if region[1] <= region[0] or region[3] <= region[2]:
            raise ProtocolError(
                f"{path} line {line}: expected x_min < x_max and y_min < y_max, got x "
                f"{region[0]:g}..{region[1]:g}, y {region[2]:g}..{region[3]:g}"
            )
        spans.append(GroundTruthSpan(Path(row["video"]).name, row["identity"], start, end, *region))
    if not spans:
        raise ProtocolError(f"{path}: expected at least one ground-truth row, got none")
    return spans


def video_keys(videos: Sequence[str | Path], spans: Sequence[GroundTruthSpan]) -> dict[str, str]:
    """Map each given video path to its file name (the ground truth's key). Two videos with one file name, or a
    ground-truth video that is not given, are errors; a given video absent from the ground truth has nobody
    known in it (all its tracks are non-mated) and is logged."""
    keys: dict[str, str] = {}
    for video in videos:
        name = Path(video).name
        if name in keys.values():
            raise ProtocolError(
                f"the ground truth names videos by file name, but two given videos are called {name}"
            )
        keys[str(video)] = name
    named = {s.video for s in spans}
    absent = sorted(named - set(keys.values()))
    if absent:
        shown = ", ".join(absent[:SHOWN]) + (", ..." if len(absent) > SHOWN else "")
        raise ProtocolError(
            f"the ground truth names {len(absent)} video(s) that are not given: {shown} "
            f"(given: {', '.join(keys.values())})"
        )
    for name in sorted(set(keys.values()) - named):
        logger.warning("video %s has no ground-truth row: all its tracks count as non-mated", name)
    return keys
