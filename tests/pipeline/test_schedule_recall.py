"""The detection schedule on real clips: what it finds against detecting everything in every frame, and what it
saves. Exhaustive = the whole frame (and every tile) each frame; scheduled = ``detect.full_every`` > 1."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.engine import RunStats, SourceTracking, TrackJob, detect
from pipeline.sources import FileSource
from stages.detect import FaceDetector
from stages.track import iou_matrix
from tests.conftest import ASSETS, ROOT, require

pytestmark = pytest.mark.slow

CLIPS = {
    # 640x360, faces of about 19 px: the frame fits the input, so a frame is detected whole or not at all
    "cctv": (
        "person_tracker_cctv.mp4",
        [
            "detect.input_size=[640, 384]",
            "detect.score_threshold=0.4",
            "track.high_threshold=0.5",
            "track.new_track_threshold=0.5",
            "track.low_threshold=0.4",
            "source.end=8",
        ],
    ),
    # 1280x720 in 640x640 tiles at native resolution plus the whole frame (7 detector inputs a frame)
    "friends": ("friends_in_video.mp4", ["detect.tiling=on", "source.end=5", "source.stride=2"]),
}


def _counting(cfg) -> tuple[FaceDetector, list[int]]:
    """A detector that adds up the pixels of every image it runs on (whole frames as letterboxed, windows)."""
    detector, pixels = FaceDetector(cfg), [0]
    whole, native = detector._run, detector._impl.native
    size = cfg.input_size[0] * cfg.input_size[1]

    def run(images):
        pixels[0] += size * len(images)
        return whole(images)

    def window(image, threshold):
        pixels[0] += image.shape[0] * image.shape[1]
        return native(image, threshold)

    detector._run, detector._impl.native = run, window
    return detector, pixels


def _run(clip: str, every: int):
    video, overrides = CLIPS[clip]
    cfg = load_config(ROOT / "configs" / "test.yaml", [*overrides, f"detect.full_every={every}"])
    source = FileSource(require(ASSETS / "videos" / video), cfg.source)
    (detector, pixels), tracking, stats = (
        _counting(cfg.detect),
        SourceTracking(cfg, source.source_id),
        RunStats(),
    )
    found = []
    for frame in source:
        dets = detect(detector, [frame], stats, [tracking.plan(frame)])[0]
        tracking.frame(frame, dets, TrackJob(), stats)
        found.append(dets)
    return found, pixels[0]


@pytest.mark.parametrize("clip", list(CLIPS))
def test_the_schedule_keeps_nine_tenths_of_the_faces_for_less_work(clip):
    exhaustive, all_inputs = _run(clip, every=1)
    scheduled, some_inputs = _run(clip, every=5)
    assert len(exhaustive) == len(scheduled)
    total = sum(len(d) for d in exhaustive)
    kept = sum(
        int((iou_matrix(e.xyxy, s.xyxy) >= 0.5).any(axis=1).sum()) if len(e) and len(s) else 0
        for e, s in zip(exhaustive, scheduled)
    )
    share = some_inputs / all_inputs
    print(f"{clip}: {total} faces, recall {kept / total:.3f}, detector pixels {share:.2f} of exhaustive")
    assert total >= 100
    assert kept / total >= 0.9
    assert some_inputs < all_inputs
    assert not any(np.isnan(d.xyxy).any() for d in scheduled)
