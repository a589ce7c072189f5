"""End to end on the shared clips: SCRFD-500M + MobileFaceNet (configs/test.yaml), real decoding."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.build import build
from pipeline.config import load_config
from pipeline.runners.runner import FileRunner
from pipeline.runners.sources import FileSource
from pipeline.sinks.outputs import CollectSink, JsonSink
from stages.detect import FaceDetector
from stages.match import Matcher
from tests.conftest import ASSETS, ROOT, require
from tests.fakes import FixedIndex

TEST_CONFIG = ROOT / "configs" / "test.yaml"
VIDEOS = ASSETS / "videos"
FRIENDS_GALLERY = ASSETS / "images" / "friends_gallery"

# Who is where in friends_in_video.mp4 (checked by eye on the frames): shot start/end (s), box centre x range
# (px), name. The clip cuts between shots; nobody else is on screen long enough to be tracked, except a few
# partly visible faces (None: any decision accepted, but never a name).
FRIENDS_TRUTH = [
    (0.0, 4.32, 800, 1000, "Joey"),
    (0.0, 4.32, 350, 500, "Rachel"),
    (4.32, 11.24, 300, 600, "Monica"),
    (4.32, 11.24, 750, 950, "Chandler"),
    (11.24, 16.72, 250, 480, "Phoebe"),
    (11.24, 16.72, 800, 950, "Ross"),
    (11.24, 16.72, 1100, 1280, None),
    (16.72, 18.81, 250, 480, "Rachel"),
    (16.72, 18.81, 850, 1000, None),  # Joey in profile: unknown is fine
    (18.81, 23.04, 200, 450, "Phoebe"),
    (18.81, 23.04, 780, 950, "Ross"),
    (23.04, 26.4, 300, 600, None),
    (23.04, 26.4, 750, 900, "Chandler"),
    (23.04, 26.4, 1150, 1280, "Phoebe"),
]


def _truth(t: float, x: float) -> list[int]:
    return [i for i, (t0, t1, x0, x1, _) in enumerate(FRIENDS_TRUTH) if t0 <= t <= t1 and x0 <= x <= x1]


def _run(video: str, overrides: list[str], gallery: bool = True, sinks=()):
    """(stats, the (template, result) of every track, track id -> [(timestamp, box)])."""
    cfg = load_config(TEST_CONFIG, overrides)
    path = str(require(VIDEOS / video))
    collect = CollectSink()
    with build(cfg, gallery_dir=require(FRIENDS_GALLERY) if gallery else None) as system:
        stats = FileRunner(
            cfg, system.detector, system.embedder, system.matcher(), [collect, *sinks], keep_boxes=True
        ).run([FileSource(path, cfg.source)])
    tracks: dict[int, list[tuple[float, np.ndarray]]] = {}
    for fb in stats.boxes[path]:
        for box, tid in zip(fb.xyxy, fb.track_id):
            tracks.setdefault(int(tid), []).append((fb.timestamp, box))
    return stats, collect.results, tracks


@pytest.mark.slow
def test_friends_names_agree_with_the_screen(tmp_path):
    sink = JsonSink(tmp_path / "r.json")
    stats, results, boxes = _run(
        "friends_in_video.mp4", ["source.stride=2", "detect.input_size=[320, 320]"], sinks=[sink]
    )
    assert 8 <= stats.tracks <= 25
    named = {}
    for template, result in results:
        people = {j for t, b in boxes[template.track_id] for j in _truth(t, (b[0] + b[2]) / 2)}
        assert len(people) == 1, f"track {template.track_id} covers {people}: one id on two people"
        expected = FRIENDS_TRUTH[people.pop()][4]
        if result.decision == "match":
            assert result.identity.name == expected, (
                f"track {template.track_id} at {template.first_timestamp:.1f}s"
            )
            named[template.track_id] = expected
        assert 1 <= template.num_crops < template.num_frames or template.num_frames <= 5
    assert set(named.values()) == {"Joey", "Rachel", "Monica", "Chandler", "Phoebe", "Ross"}
    assert len(named) >= 9
    assert stats.crops_embedded < stats.detections / 3  # quality-gated, not every detection
    sink.close()
    assert (tmp_path / "r.json").stat().st_size > 0


@pytest.mark.slow
def test_crowd_track_count_is_sane():
    stats, results, boxes = _run("facenet_pytorch_video.mp4", ["source.end=2.0"], gallery=False)
    assert stats.frames == 51  # 0.00 s to 2.00 s inclusive, 25 fps
    assert 4 <= stats.tracks <= 14  # up to ten faces on screen at once
    for template, result in results:
        assert result.decision == "unknown" and not result.candidates  # empty gallery
        seq = boxes[template.track_id]
        centres = np.array([(b[:2] + b[2:]) / 2 for _, b in seq])
        heights = np.array([b[3] - b[1] for _, b in seq])
        jumps = np.linalg.norm(np.diff(centres, axis=0), axis=1) / heights[1:] if len(seq) > 1 else [0]
        assert max(jumps) < 0.5, f"track {template.track_id} jumps {max(jumps):.2f} face heights in one frame"


@pytest.mark.slow
def test_cctv_small_faces_are_detected_and_tracked():
    small_faces = [
        "detect.input_size=[640, 384]",
        "detect.score_threshold=0.4",
        "track.high_threshold=0.5",
        "track.new_track_threshold=0.5",
        "track.low_threshold=0.4",
        "source.stride=2",
        "source.end=10",
    ]
    stats, results, boxes = _run("person_tracker_cctv.mp4", small_faces, gallery=False)
    long_small = [
        t
        for t, _ in results
        if t.last_timestamp - t.first_timestamp >= 1.0
        and np.median([b[3] - b[1] for _, b in boxes[t.track_id]]) < 22
    ]
    assert len(long_small) >= 2


class _BrokenEmbedder:
    embedder_id, dim = "broken", 4

    def embed(self, crops):
        raise RuntimeError("embedder went away")


def test_embedding_failure_stops_the_run():
    cfg = load_config(
        TEST_CONFIG, ["source.end=1.0", "source.stride=3", "detect.input_size=[320, 320]", "track.min_hits=1"]
    )
    index = FixedIndex([], np.zeros((0, 4), np.float32), 0.3)
    runner = FileRunner(cfg, FaceDetector(cfg.detect), _BrokenEmbedder(), Matcher(cfg.match, index), [])
    with pytest.raises(RuntimeError, match="embedder went away"):
        runner.run([FileSource(str(require(VIDEOS / "friends_in_video.mp4")), cfg.source)])


def test_several_files_in_one_run():
    cfg = load_config(TEST_CONFIG, ["source.end=1.0", "source.stride=3", "detect.input_size=[320, 320]"])
    paths = [str(require(VIDEOS / v)) for v in ("friends_in_video.mp4", "facenet_pytorch_video.mp4")]
    collect = CollectSink()
    with build(cfg, gallery_dir=require(FRIENDS_GALLERY)) as system:
        stats = FileRunner(cfg, system.detector, system.embedder, system.matcher(), [collect]).run(
            [FileSource(p, cfg.source) for p in paths]
        )
    by_source = {p: [r for _, r in collect.results if r.source_id == p] for p in paths}
    assert all(by_source.values()) and set(stats.decode) == set(paths)
    assert {r.identity.name for r in by_source[paths[0]] if r.identity} == {"Joey", "Rachel"}
