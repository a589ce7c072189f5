"""The selector keeps every track's per-frame boxes and the frame of its best crop, downscaled when it ends."""

from __future__ import annotations

import numpy as np
import pytest

from core.types import SCENE_MAX_WIDTH, FaceCrop, Quality
from pipeline.config import RunnerConfig
from pipeline.runners.selection import CropSelector, downscale

SEED = 7


def _frame(index: int, width: int, height: int) -> np.ndarray:
    """A seeded random frame whose top-left pixel encodes ``index`` (to tell frames apart after downscaling)."""
    image = np.random.default_rng(SEED + index).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image[:8, :8] = index
    return image


def _crop(index: int, track: int) -> FaceCrop:
    q = Quality(30.0, 0.9, 50.0, 0.1)
    return FaceCrop("v", track, index, index / 25, np.zeros((112, 112, 3), np.uint8), q)


def _box(index: int, track: int) -> np.ndarray:
    return np.array([100 + 10 * index + 300 * track, 50, 180 + 10 * index + 300 * track, 150], np.float32)


@pytest.mark.parametrize("width, height", [(640, 360), (1280, 720), (1920, 1080), (3840, 2160)])
def test_one_frame_per_track_that_of_its_best_crop(width, height):
    sel = CropSelector(RunnerConfig(best_k=3))
    scores = {1: [0.2, 0.6, 0.4, 0.9, 0.3], 2: [0.5, 0.1, 0.7, 0.2, 0.8]}
    for i in range(5):
        image = _frame(i, width, height)
        for track in (1, 2):
            sel.offer(_crop(i, track), scores[track][i], True, True, _box(i, track), image)
            state = sel._tracks[track]
            best = int(np.argmax(scores[track][: i + 1]))
            assert state.best.frame_index == best
            assert (state.best_frame[0] is image) == (best == i)  # a reference, not a copy
            assert int(state.best_frame[0][0, 0, 0]) == best  # the frame of the best crop, not the latest
            assert state.scene is None  # downscaled only when the track ends
    scale = min(1.0, SCENE_MAX_WIDTH / width)
    for track, best in ((1, 3), (2, 4)):
        state, _ = sel.finish(track, confirmed=True)
        scene = state.scene
        assert scene.image.shape == (round(height * scale), min(width, SCENE_MAX_WIDTH), 3)
        assert scene.scale == pytest.approx(scale) and scene.timestamp == pytest.approx(best / 25)
        assert int(scene.image[0, 0, 0]) == best and state.best_frame is None
        np.testing.assert_allclose(scene.box, _box(best, track) * scale, rtol=1e-6)
        boxes = state.box_rows()
        assert boxes.shape == (state.frames, 5) == (5, 5)
        np.testing.assert_allclose(boxes[:, 0], np.arange(5) / 25, rtol=1e-6)
        np.testing.assert_array_equal(boxes[:, 1:], np.stack([_box(i, track) for i in range(5)]))


def test_tracks_whose_best_is_in_the_same_frame_share_one_copy_never_the_source_frame():
    sel = CropSelector(RunnerConfig())
    image = _frame(0, 1920, 1080)
    for track in (1, 2, 3, 4):
        sel.offer(_crop(0, track), 0.5, True, True, _box(0, track), image)
    small = _frame(1, 640, 360)
    sel.offer(_crop(1, 4), 0.9, True, True, _box(1, 4), small)
    scenes = [sel.finish(t, confirmed=True)[0].scene for t in (1, 2, 3)]
    assert scenes[0].image is scenes[1].image is scenes[2].image
    assert not np.shares_memory(scenes[0].image, image)
    other = sel.finish(4, confirmed=True)[0].scene
    assert (
        not np.shares_memory(other.image, small) and int(other.image[0, 0, 0]) == 1
    )  # a small frame is copied


def test_no_box_no_frame_no_scene_and_finished_tracks_keep_nothing():
    sel = CropSelector(RunnerConfig())
    sel.offer(_crop(0, 1), 0.5, True, True)
    state, _ = sel.finish(1, confirmed=True)
    assert state.scene is None and state.box_rows() is None and state.frames == 1
    sel.offer(_crop(1, 2), 0.5, False, False, _box(1, 2), _frame(1, 320, 240))
    state, _ = sel.finish(2, confirmed=False)
    assert state.scene is not None and state.box_rows().shape == (1, 5)  # unusable crops still show the face
    assert sel._tracks == {}


def test_downscale_keeps_aspect_and_width_limit():
    image = _frame(0, 2000, 1001)
    small, scale = downscale(image, 1280)
    assert small.shape == (641, 1280, 3) and scale == pytest.approx(0.64)
    same, one = downscale(image[:, :1280])
    assert one == 1.0 and same.shape == (1001, 1280, 3)
