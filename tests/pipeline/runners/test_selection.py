from __future__ import annotations

import numpy as np
import pytest

from core.types import FaceCrop, Quality
from pipeline.config import RunnerConfig
from pipeline.runners.selection import CropSelector


def _crop(i, track=1):
    return FaceCrop("v", track, i, i / 25, np.zeros((112, 112, 3), np.uint8), Quality(30.0, 0.9, 50.0, 0.1))


def _feed(sel, scores, confirmed_from=0, usable=True):
    return [sel.offer(_crop(i), s, usable, i >= confirmed_from) for i, s in enumerate(scores)]


def test_first_confirmed_crop_and_clear_improvements_are_embedded_now_when_watched():
    sel = CropSelector(RunnerConfig(best_k=3, improve_margin=0.1), early=True)
    now = _feed(sel, [0.5, 0.52, 0.56, 0.4, 0.9, 0.95])
    assert now == [True, False, True, False, True, False]


def test_end_of_track_embeds_missing_members_of_the_best_k_when_watched():
    sel = CropSelector(RunnerConfig(best_k=3, improve_margin=0.1), early=True)
    scores = [0.5, 0.52, 0.56, 0.4, 0.9, 0.95, 0.3]
    now = _feed(sel, scores)
    state, pooled = sel.finish(1, confirmed=True)
    assert state.frames == 7 and state.best.frame_index == 5
    assert sorted(c.frame_index for c, _ in pooled) == [5]  # best three: 0.95 (pooled), 0.9 and 0.56 (done)
    assert sum(now) + len(pooled) == 4 < len(scores)


@pytest.mark.parametrize(
    "scores, best_k, expected",
    [
        ([], 3, []),  # a confirmed track without a usable crop
        ([0.4], 3, [0]),
        ([0.5, 0.52, 0.56, 0.4, 0.9, 0.95, 0.3], 3, [2, 4, 5]),
        ([0.7, 0.1, 0.2], 1, [0]),
    ],
)
def test_unwatched_tracks_embed_exactly_their_best_k_at_the_end(scores, best_k, expected):
    sel = CropSelector(RunnerConfig(best_k=best_k, improve_margin=0.1))
    assert not any(_feed(sel, scores))
    _, pooled = sel.finish(1, confirmed=True)
    assert sorted(c.frame_index for c, _ in pooled) == expected


def test_tentative_crops_wait_and_unconfirmed_tracks_cost_nothing():
    sel = CropSelector(RunnerConfig(best_k=2))
    assert _feed(sel, [0.9, 0.8], confirmed_from=5) == [False, False]
    assert sel.finish(1, confirmed=False)[1] == []


def test_unusable_crops_are_never_embedded_but_count_as_frames():
    sel = CropSelector(RunnerConfig())
    assert _feed(sel, [0.9, 0.8], usable=False) == [False, False]
    state, pooled = sel.finish(1, confirmed=True)
    assert pooled == [] and state.frames == 2 and state.best is not None


@pytest.mark.parametrize("n", [1, 7])
def test_embed_all_embeds_every_usable_crop(n):
    sel = CropSelector(RunnerConfig(embed_all=True, best_k=1))
    now = _feed(sel, list(np.linspace(0.9, 0.1, n)), confirmed_from=min(2, n - 1))
    _, pooled = sel.finish(1, confirmed=True)
    assert sum(now) + len(pooled) == n


def test_tracks_are_independent():
    sel = CropSelector(RunnerConfig(), early=True)
    assert sel.offer(_crop(0, track=1), 0.5, True, True) and sel.offer(_crop(0, track=2), 0.1, True, True)
