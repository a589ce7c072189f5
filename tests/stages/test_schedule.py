"""The detection schedule: full frames now and then, in between only around tracks and motion."""

from __future__ import annotations

import numpy as np
import pytest

from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.schedule import DetectionSchedule, motion_regions
from tests.conftest import require
from tests.stages.conftest import SCRFD


def _schedule(every: int = 3) -> DetectionSchedule:
    return DetectionSchedule(DetectConfig(model="x.onnx", full_every=every))


def _frame(square_at: int | None = None) -> np.ndarray:
    img = np.full((360, 640, 3), 90, np.uint8)
    if square_at is not None:
        img[100:140, square_at : square_at + 40] = 250
    return img


NO_TRACKS = np.zeros((0, 4), np.float32)


def test_every_frame_is_full_without_a_schedule():
    schedule = _schedule(every=1)
    assert all(schedule.plan(_frame(), NO_TRACKS) is None for _ in range(5))


def test_full_frames_come_every_n_and_a_still_empty_scene_costs_nothing():
    schedule = _schedule(every=3)
    plans = [schedule.plan(_frame(), NO_TRACKS) for _ in range(7)]
    assert [p is None for p in plans] == [True, False, False, True, False, False, True]
    assert all(len(p) == 0 for p in plans if p is not None)


def test_regions_grow_around_live_tracks_and_carry_their_face_size():
    schedule = _schedule()
    schedule.plan(_frame(), NO_TRACKS)
    (region,) = schedule.plan(_frame(), np.asarray([[100, 100, 120, 120]], np.float32))
    assert region.tolist() == [84, 84, 136, 136, 20]  # 20 px box, at least 16 px around it
    (clipped,) = schedule.plan(_frame(), np.asarray([[0, 0, 100, 100]], np.float32))
    assert clipped.tolist() == [0, 0, 150, 150, 100]  # half its size around it, inside the frame


def test_motion_is_a_region_of_any_face_size():
    schedule = _schedule()
    schedule.plan(_frame(square_at=100), NO_TRACKS)
    regions = schedule.plan(_frame(square_at=140), NO_TRACKS)
    assert len(regions) >= 1 and (regions[:, 4] == 0).all()
    x0, y0 = regions[:, :2].min(axis=0)
    x1, y1 = regions[:, 2:4].max(axis=0)
    assert x0 <= 104 and x1 >= 176 and y0 <= 104 and y1 >= 136  # the edges that changed, both sides


def test_motion_that_touches_a_track_is_its_own():
    schedule = _schedule()
    schedule.plan(_frame(square_at=100), NO_TRACKS)
    track = np.asarray([[150, 90, 170, 110]], np.float32)  # a face whose region meets the moving square
    regions = schedule.plan(_frame(square_at=140), track)
    assert regions[:, 4].tolist() == [20]


def test_motion_beyond_the_share_waits_for_the_next_full_frame():
    def moving(share: float) -> np.ndarray:
        schedule = DetectionSchedule(DetectConfig(model="x.onnx", full_every=3, motion_share=share))
        before, after = _frame(), _frame()
        before[20:30, 20:30] = after[300:350, 500:600] = 250  # a small and a larger change
        schedule.plan(before, NO_TRACKS)
        return schedule.plan(after, NO_TRACKS)

    assert len(moving(1.0)) == 2
    (small,) = moving(128 * 128 * 1.5 / (640 * 360))  # room for the smallest only
    assert small[2] < 100
    assert len(moving(0.0)) == 0


def test_a_new_scene_is_detected_in_full_and_restarts_the_count():
    schedule = _schedule(every=3)
    dark, bright = _frame(), np.full((360, 640, 3), 200, np.uint8)
    plans = [schedule.plan(img, NO_TRACKS) for img in (dark, dark, bright, bright, bright, bright)]
    assert [p is None for p in plans] == [True, False, True, False, False, True]


def test_no_motion_between_equal_thumbnails():
    thumb = np.full((90, 160), 50, np.uint8)
    assert motion_regions(thumb, thumb, 12, 0.25).shape == (0, 4)


def _counting(cfg: DetectConfig) -> tuple[FaceDetector, list[tuple[int, int]]]:
    """A detector that records the (height, width) of every image it runs on (whole frames and windows)."""
    detector, seen = FaceDetector(cfg), []
    whole, native = detector._run, detector._impl.native
    detector._run = lambda images, *rest: seen.extend(i.shape[:2] for i in images) or whole(images, *rest)
    detector._impl.native = lambda images, *rest: (
        seen.extend(i.shape[:2] for i in images) or native(images, *rest)
    )
    return detector, seen


@pytest.mark.parametrize(
    "regions, expected",
    [
        (None, [(640, 1000), (640, 640), (640, 640)]),  # the whole frame and its two tiles
        (np.zeros((0, 5), np.float32), []),  # nothing of interest: no work
        ([[10, 10, 40, 40, 0]], [(128, 128)]),  # one small region: one window at native resolution
        ([[10, 10, 40, 40, 0], [50, 20, 290, 70, 0]], [(128, 288)]),  # close regions share a window
        (
            [[10, 10, 40, 40, 0], [50, 20, 290, 70, 30]],
            [(128, 128), (128, 256)],
        ),  # a track's and motion's: apart
        ([[0, 0, 400, 400, 192]], [(208, 208)]),  # a large tracked face: its 416 px window at half size
        ([[0, 0, 900, 100, 0]], [(640, 1000)]),  # larger than an input: the letterboxed frame only
        ([[0, 0, 300, 100, 0], [320, 0, 900, 100, 0]], [(128, 320), (128, 608)]),  # merged would not fit
    ],
)
def test_regions_limit_what_is_detected(regions, expected):
    cfg = DetectConfig(
        model=str(require(SCRFD)), threads=1, tiling="on", native_input="tiles", tile_overlap=64
    )
    detector, seen = _counting(cfg)
    frame = np.full((640, 1000, 3), 90, np.uint8)
    plan = None if regions is None else np.asarray(regions, np.float32).reshape(-1, 5)
    assert len(detector.detect([frame], [plan])[0]) == 0
    assert sorted(seen) == sorted(expected)


HD = (1080, 1920, 3)  # seen at its own resolution by a full detection (tiling auto, faces from 8 px)


def _hd(changes: tuple[tuple[int, int, int, int], ...] = ()) -> np.ndarray:
    img = np.full(HD, 90, np.uint8)
    for x0, y0, x1, y1 in changes:
        img[y0:y1, x0:x1] = 250
    return img


def _hd_schedule(complete_every: int = 4) -> DetectionSchedule:
    return DetectionSchedule(
        DetectConfig(model="x.onnx", full_every=2, min_face_px=8, complete_every=complete_every)
    )


def _is_partial(plan) -> bool:
    """A full detection that sees the whole frame letterboxed only (a region of the whole frame among others)."""
    return plan is not None and [0, 0, 1920, 1080, 0] in plan.tolist()


@pytest.mark.parametrize(
    "complete_every,complete", [(4, [0, 4, 8]), (2, [0, 2, 4, 6, 8]), (1, list(range(9)))]
)
def test_every_nth_full_detection_sees_all_of_a_large_frame(complete_every, complete):
    schedule = _hd_schedule(complete_every)
    plans = [schedule.plan(_hd(), NO_TRACKS) for _ in range(18)]
    fulls = plans[::2]  # full_every 2: frames 0, 2, 4, ...
    assert [k for k, p in enumerate(fulls) if p is None] == complete
    assert all(_is_partial(p) and len(p) == 1 for p in fulls if p is not None)  # a still scene: nothing else
    assert not any(_is_partial(p) for p in plans[1::2])  # frames between full detections are not full


def test_a_partial_full_detection_sees_what_changed_since_the_last_full_one_and_the_tracks():
    schedule = _hd_schedule()
    schedule.plan(_hd(), NO_TRACKS)  # complete
    schedule.plan(_hd(((100, 100, 140, 140),)), NO_TRACKS)  # appeared between full detections
    track = np.asarray([[1000, 500, 1060, 560]], np.float32)
    plan = schedule.plan(_hd(((100, 100, 140, 140),)), track)  # still there: changed since the last full one
    assert _is_partial(plan)
    around, changed = plan[plan[:, 4] > 0], plan[(plan[:, 4] == 0) & (plan[:, 2] < 1920)]
    assert around[:, 4].tolist() == [60]
    assert len(changed) >= 1 and changed[:, 0].min() <= 100 and changed[:, 2].max() >= 140


def test_half_the_frame_changed_is_a_complete_full_detection():
    schedule = _hd_schedule()
    schedule.plan(_hd(), NO_TRACKS)
    schedule.plan(_hd(), NO_TRACKS)
    assert schedule.plan(_hd(((0, 0, 1920, 700),)), NO_TRACKS) is None


def test_a_frame_the_letterbox_sees_whole_is_always_complete():
    """640x360 fits the input: a full detection sees all of it at its own size anyway."""
    schedule = DetectionSchedule(DetectConfig(model="x.onnx", full_every=2, min_face_px=8, complete_every=4))
    plans = [schedule.plan(_frame(), NO_TRACKS) for _ in range(10)]
    assert [p is None for p in plans[::2]] == [True] * 5


@pytest.mark.parametrize(
    "change,left_to_letterbox",
    [
        ((100, 100, 300, 1000), True),  # 900 px tall: a person near enough for the letterboxed frame
        ((100, 100, 300, 300), False),  # 200 px: someone far away, seen at native resolution
    ],
)
def test_a_partial_full_detection_leaves_a_near_person_to_the_letterbox(change, left_to_letterbox):
    schedule = _hd_schedule()
    schedule.plan(_hd(), NO_TRACKS)  # complete
    schedule.plan(_hd((change,)), NO_TRACKS)
    plan = schedule.plan(_hd((change,)), NO_TRACKS)  # full: changed since the last full one
    assert _is_partial(plan)
    changed = plan[plan[:, 2] - plan[:, 0] < 1920]
    assert (len(changed) == 0) is left_to_letterbox


def test_a_crowd_moving_as_one_near_the_camera_is_a_partial_full_detection():
    """Changed areas spanning most of the frame (one connected area, 1100x1080), but as tall as people near enough
    for the letterboxed frame: not all of it at native resolution, only the small change away from them."""
    schedule = _hd_schedule()
    schedule.plan(_hd(), NO_TRACKS)
    schedule.plan(_hd(), NO_TRACKS)
    crowd = ((0, 0, 1100, 60), (0, 0, 60, 1080), (1040, 0, 1100, 1080), (1500, 900, 1540, 940))
    plan = schedule.plan(_hd(crowd), NO_TRACKS)
    assert _is_partial(plan)
    changed = plan[plan[:, 2] - plan[:, 0] < 1920]
    assert len(changed) == 1 and changed[0, 0] <= 1500 and changed[0, 2] >= 1540
