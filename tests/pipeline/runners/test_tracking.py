"""Frames of several sources share a detector call (pipeline/runners/tracking.py): with a detection schedule, each
call holds at most one frame per source, in order, so every frame is planned from its source's frame before it."""

from __future__ import annotations

import numpy as np
import pytest

from core.types import Detections, Frame
from pipeline.config import load_config
from pipeline.runners.tracking import RunStats, SourceTracking, TrackJob, detect_and_track
from tests.conftest import ROOT

IMAGE = np.zeros((64, 64, 3), np.uint8)


class _Detector:
    """Finds nothing; ``starts``: per call, how many frames had been tracked before it."""

    def __init__(self, tracked: list[str]) -> None:
        self.tracked, self.starts = tracked, []

    def detect(self, images, regions=None):
        self.starts.append(len(self.tracked))
        return [Detections.empty() for _ in images]


@pytest.mark.parametrize(
    "order,full_every,calls",
    [
        ("ABAABC", 6, ["AB", "A", "ABC"]),  # a source's next frame waits for the next call
        ("AAAA", 6, ["A", "A", "A", "A"]),  # one source: one frame at a time
        ("ABCD", 6, ["ABCD"]),  # four cameras: one call
        ("ABAB", 1, ["ABAB"]),  # no schedule: the whole batch at once
        ("", 6, []),  # nothing decoded
    ],
)
def test_one_frame_per_source_per_call_where_detection_is_scheduled(order, full_every, calls):
    cfg = load_config(ROOT / "configs" / "test.yaml", [f"detect.full_every={full_every}"])
    states = {name: SourceTracking(cfg, name) for name in "ABCD"}
    frames = [Frame(name, i, i / 25, IMAGE) for i, name in enumerate(order)]
    seen: list[str] = []
    detector = _Detector(seen)
    for frame, _ in detect_and_track(detector, frames, lambda f: states[f.source_id], TrackJob(), RunStats()):
        seen.append(frame.source_id)
    bounds = detector.starts + [len(seen)]
    assert ["".join(seen[a:b]) for a, b in zip(bounds, bounds[1:])] == calls
    assert "".join(seen) == order  # every frame tracked, in order
