"""The detection schedule on real clips: what it finds against detecting everything in every frame, and what it
saves. Exhaustive = the whole frame (and at native resolution) each frame; scheduled = ``configs/test.yaml``'s
``detect.full_every``."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.runners.sources import FileSource
from pipeline.runners.tracking import RunStats, SourceTracking, TrackJob, detect
from stages.detect import FaceDetector, letterbox
from stages.track import iou_matrix
from tests.conftest import ASSETS, ROOT, require

pytestmark = pytest.mark.slow

CLIPS = {
    # 640x360, faces of about 19 px: the frame fits the input, so windows are at native resolution anyway
    "cctv": ("person_tracker_cctv.mp4", ["source.end=8"]),
    # 1280x720: the frame at native resolution as one input plus the letterboxed frame; close-ups
    "friends": ("friends_in_video.mp4", ["source.end=5", "source.stride=2"]),
    # 1920x1080: a crowd walking toward the camera, everything moves
    "crowd": ("facenet_pytorch_video.mp4", []),
}


def _counting(cfg) -> tuple[FaceDetector, list[int]]:
    """A detector that adds up the pixels of every image it runs on (whole frames as letterboxed, windows)."""
    detector, pixels = FaceDetector(cfg), [0]
    whole, native = detector._run, detector._impl.native

    def run(images, *rest):
        pixels[0] += sum(letterbox(i, cfg.input_size, fit=True)[0].size // 3 for i in images)
        return whole(images, *rest)

    def windows(images, *rest):
        pixels[0] += sum(i.shape[0] * i.shape[1] for i in images)
        return native(images, *rest)

    detector._run, detector._impl.native = run, windows
    return detector, pixels


def _run(clip: str, every: int | None):
    video, overrides = CLIPS[clip]
    forced = [] if every is None else [f"detect.full_every={every}"]
    cfg = load_config(ROOT / "configs" / "test.yaml", [*overrides, *forced])
    assert cfg.detect.tiling == "auto" and cfg.detect.full_every > 1 or every == 1  # on by default
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
    scheduled, some_inputs = _run(clip, every=None)  # configs/test.yaml's schedule
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
