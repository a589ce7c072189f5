"""Detector runs side by side (stages/detect_runs.py, ``detect.workers``): shares of about equal pixels run at
once, and detection finds exactly what it finds one run at a time."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.detect_runs import RunPool, shares
from stages.tiling import native_windows
from tests.conftest import ASSETS, require
from tests.stages.conftest import SCRFD

CROWD = ASSETS / "videos" / "facenet_pytorch_video.mp4"  # 1920x1080


@pytest.mark.parametrize(
    "costs,count,expected",
    [
        ([], 2, []),  # nothing to run
        ([3.0], 2, [[0]]),  # one item: one share
        ([1.0, 2.0], 1, [[0, 1]]),  # one worker: everything in order
        ([5.0, 4.0, 3.0, 3.0, 3.0], 2, [[0, 3], [1, 2, 4]]),  # costliest first into the lightest share
        ([1.0, 1.0, 1.0], 5, [[0], [1], [2]]),  # more workers than items
        ([0.0, 0.0], 2, [[0], [1]]),  # equal costs: fewer items first
    ],
)
def test_shares_split_by_cost_keep_order_and_cover_every_item(costs, count, expected):
    got = shares(costs, count)
    assert got == expected
    assert sorted(i for share in got for i in share) == list(range(len(costs)))


def test_the_pool_runs_its_tasks_at_once_and_returns_them_in_order():
    pool = RunPool(3)
    meet = threading.Barrier(3, timeout=10)  # passes only if all three run at the same time
    names = []

    def task(k):
        def run():
            meet.wait()
            names.append(threading.current_thread().name)
            return k

        return run

    try:
        assert pool.run([task(k) for k in range(3)]) == [0, 1, 2]
    finally:
        pool.close()
    assert threading.current_thread().name in names and len(set(names)) == 3  # the first ran here
    assert pool.run([lambda: 1, lambda: 2]) == [1, 2]  # closed: one at a time, here


def test_one_worker_runs_on_the_calling_thread():
    pool = RunPool(1)
    assert pool.run([threading.current_thread, threading.current_thread]) == [threading.current_thread()] * 2


@pytest.mark.parametrize(
    "size,parts,expected",
    [
        ((1280, 720), 2, [(0, 0, 672, 720), (608, 0, 1280, 720)]),  # landscape: side by side, 64 px shared
        ((720, 1280), 2, [(0, 0, 720, 672), (0, 608, 720, 1280)]),  # portrait: one above the other
        ((1920, 1080), 1, [(0, 0, 1920, 1080)]),  # one worker: the frame
        ((150, 100), 2, [(0, 0, 150, 100)]),  # bands narrower than twice the overlap: the frame
    ],
)
def test_the_frame_is_seen_in_bands_when_it_runs_in_parts(size, parts, expected):
    assert native_windows(*size, (640, 640), 64, "frame", parts=parts) == expected


def _crowd_frame() -> np.ndarray:
    with av.open(str(require(CROWD))) as container:
        return next(container.decode(video=0)).to_ndarray(format="bgr24")


def _same(a, b) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    np.testing.assert_allclose(a.score, b.score, atol=1e-5)


@pytest.mark.parametrize("min_face_px", [12, 8])  # 8: windows around weak small faces are detected again too
def test_runs_at_once_find_what_one_run_at_a_time_finds(min_face_px):
    """The 1080p crowd frame in tiles, whole and around regions (a tracked face, motion), with one worker and with
    two: the same faces, boxes and scores."""
    frame = _crowd_frame()
    regions = np.asarray([[700, 200, 1300, 700, 90.0], [0, 600, 500, 1080, 0.0]], np.float32)
    found = {}
    for workers in (1, 2):
        cfg = DetectConfig(
            model=str(require(SCRFD)), workers=workers, native_input="tiles", min_face_px=min_face_px
        )
        detector = FaceDetector(cfg)
        try:
            found[workers] = detector.detect([frame, frame], [None, regions])
        finally:
            detector.close()
    for one, two in zip(found[1], found[2]):
        _same(one, two)


def test_bands_find_the_faces_of_the_whole_frame():
    """The 1080p crowd frame seen as one input and as two bands: the same faces (boxes within 2 px, scores within
    0.02: a band's edge changes what the network sees near it)."""
    frame = _crowd_frame()
    found = {}
    for workers in (1, 2):
        detector = FaceDetector(
            # min_face_px 12: no second look at weak faces, whose scores a band's edge changes too
            DetectConfig(model=str(require(SCRFD)), workers=workers, native_input="frame", min_face_px=12)
        )
        try:
            found[workers] = detector.detect([frame])[0]
        finally:
            detector.close()
    one, two = found[1], found[2]
    assert len(one) == len(two) >= 5
    order = lambda d: np.lexsort((d.xyxy[:, 1], d.xyxy[:, 0]))  # noqa: E731
    np.testing.assert_allclose(one.xyxy[order(one)], two.xyxy[order(two)], atol=2.0)
    np.testing.assert_allclose(one.score[order(one)], two.score[order(two)], atol=0.02)
