from __future__ import annotations

import numpy as np
import pytest

from core.types import Detections
from stages.config import TrackConfig
from stages.track import KalmanBox, Tracker, grown, iou_matrix


def _dets(boxes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(boxes, scores, np.zeros((len(boxes), 5, 2), np.float32))


def _box(cx, cy, side=40):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def _run(tracker, frames, fps=25.0):
    return [
        tracker.update(_dets(*f) if isinstance(f, tuple) else _dets(f), i / fps).track_id.tolist()
        for i, f in enumerate(frames)
    ]


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 1 / 3, 0.0]])
    assert iou_matrix(a, np.zeros((0, 4))).shape == (1, 0)


def test_kalman_follows_constant_motion():
    k = KalmanBox(np.array(_box(100, 100)))
    for step in range(1, 20):
        k.predict()
        k.update(np.array(_box(100 + 5 * step, 100)))
    k.predict()
    np.testing.assert_allclose(k.box, _box(200, 100), atol=1.0)


@pytest.mark.parametrize("frames", [[], [[]] * 3], ids=["no-frames", "zero-faces"])
def test_nothing_to_track(frames):
    tracker = Tracker(TrackConfig())
    assert all(ids == [] for ids in _run(tracker, frames))
    assert tracker.flush() == []


def test_one_frame_is_tentative_and_not_confirmed():
    tracker = Tracker(TrackConfig(min_hits=3))
    assert _run(tracker, [[_box(50, 50)]]) == [[1]]
    ends = tracker.flush()
    assert len(ends) == 1 and not ends[0].confirmed


def test_two_walkers_crossing_keep_their_ids():
    """Two faces of different sizes (near and far) walk through each other: ids must not swap."""
    tracker = Tracker(TrackConfig(min_hits=2))
    frames = [[_box(100 + 10 * i, 100, 60), _box(400 - 10 * i, 105, 24)] for i in range(31)]
    ids = _run(tracker, frames)
    assert ids[0] == [1, 2] and all(row == [1, 2] for row in ids)


def test_lost_and_found_within_buffer_keeps_id():
    tracker = Tracker(TrackConfig(min_hits=2, max_lost_s=0.5))
    moving = [[_box(100 + 4 * i, 100)] for i in range(10)]
    gap = [[]] * 5  # 0.2 s unseen
    back = [[_box(100 + 4 * i, 100)] for i in range(15, 20)]
    ids = _run(tracker, moving + gap + back)
    assert {i for row in ids for i in row} == {1}
    assert tracker.flush()[0].hits == 15


def test_track_ends_after_buffer_and_new_face_gets_new_id():
    tracker = Tracker(TrackConfig(min_hits=2, max_lost_s=0.2))
    ids = _run(tracker, [[_box(100, 100)]] * 5 + [[]] * 10 + [[_box(100, 100)]] * 3)
    ends = tracker.finished()
    assert ids[-1] == [2] and len(ends) == 1 and ends[0].track_id == 1 and ends[0].confirmed


def test_low_score_detection_extends_but_does_not_start_tracks():
    tracker = Tracker(TrackConfig(min_hits=2, high_threshold=0.6, low_threshold=0.3))
    frames = [([_box(100, 100)], [0.9])] * 3 + [([_box(102, 100), _box(300, 300)], [0.4, 0.4])]
    ids = _run(tracker, frames)
    assert ids[-1] == [1, -1]


def test_reset_restarts_ids():
    tracker = Tracker(TrackConfig())
    _run(tracker, [[_box(10, 10)]])
    tracker.reset()
    assert _run(tracker, [[_box(10, 10)]]) == [[1]]


@pytest.mark.parametrize("small_face_px", [24.0, 0.0])
def test_a_tiny_face_jittering_keeps_one_track_when_small_boxes_are_grown(small_face_px):
    """An 8 px face moving 6 px a frame with +-3 px of jitter (seeded): its boxes barely overlap from frame to
    frame, so compared as they are it breaks into pieces; grown to 24 px it stays one track."""
    rng = np.random.default_rng(3)
    tracker = Tracker(TrackConfig(min_hits=2, small_face_px=small_face_px))
    frames = [[_box(100 + 6 * i + rng.uniform(-3, 3), 200 + rng.uniform(-3, 3), 8)] for i in range(40)]
    ids = {i for row in _run(tracker, frames) for i in row if i >= 0}
    assert (len(ids) == 1) == (small_face_px > 0), ids


def test_small_boxes_grow_around_their_centres_and_large_ones_stay():
    boxes = np.array([[10, 10, 18, 20], [0, 0, 40, 20]], float)
    np.testing.assert_allclose(grown(boxes, 24), [[2, 3, 26, 27], [0, -2, 40, 22]])
    assert grown(boxes, 0) is boxes


@pytest.mark.parametrize(
    "side, small_face_threshold, tracked",
    [
        (10, 0.5, True),  # a tiny face scored 0.55: confident enough
        (10, 0.6, False),  # the same held to high_threshold: never starts a track
        (40, 0.5, False),  # a face of 40 px scored 0.55 is held to high_threshold
    ],
)
def test_tiny_faces_start_tracks_from_their_own_threshold(side, small_face_threshold, tracked):
    tracker = Tracker(TrackConfig(min_hits=3, small_face_threshold=small_face_threshold))
    frames = [([_box(100 + 2 * i, 100, side)], [0.55]) for i in range(6)]
    ids = _run(tracker, frames)
    assert (ids[-1] == [1]) is tracked, ids
    assert any(end.confirmed for end in tracker.flush()) is tracked
