"""A track asks for ``runner.crops_per_second`` crops per second it lasted: at least one, at most ``best_k``."""

from __future__ import annotations

import numpy as np
import pytest

from core.types import FaceCrop, Quality
from pipeline.config import RunnerConfig
from pipeline.runners.selection import CropSelector

SCORES = [0.5, 0.52, 0.56, 0.4, 0.9, 0.95, 0.3, 0.7]


def _offer(sel: CropSelector, scores: list[float]) -> list[bool]:
    now = []
    for i, s in enumerate(scores):
        crop = FaceCrop("v", 1, i, i / 25, np.zeros((112, 112, 3), np.uint8), Quality(30.0, 0.9, 50.0, 0.1))
        now.append(sel.offer(crop, s, True, True))
    return now


@pytest.mark.parametrize(
    "seconds, rate, expected",
    [
        (0.0, 2.0, 1),  # a single frame
        (0.2, 2.0, 1),  # a few frames
        (0.5, 2.0, 1),
        (0.51, 2.0, 2),
        (1.5, 2.0, 3),
        (2.5, 2.0, 5),
        (60.0, 2.0, 5),  # best_k caps it
        (0.2, 0.0, 5),  # rate 0: every track gets best_k
        (None, 2.0, 5),  # length unknown
    ],
)
def test_budget_grows_with_the_track_and_stops_at_best_k(seconds, rate, expected):
    sel = CropSelector(RunnerConfig(best_k=5, crops_per_second=rate))
    assert sel.budget(seconds) == expected
    assert not any(_offer(sel, SCORES))
    _, pooled = sel.finish(1, confirmed=True, seconds=seconds)
    best = sorted(SCORES, reverse=True)[:expected]
    assert [s for _, s in pooled] == best  # the best ones, best first


@pytest.mark.parametrize("seconds, expected", [(0.2, []), (1.0, [0.85]), (3.0, [0.85, 0.3])])
def test_early_tracks_count_their_embedded_crops_against_the_budget(seconds, expected):
    sel = CropSelector(RunnerConfig(best_k=4, crops_per_second=2.0, improve_margin=0.1), early=True)
    assert _offer(sel, [0.5, 0.9, 0.3, 0.85]) == [True, True, False, False]
    _, pooled = sel.finish(1, confirmed=True, seconds=seconds)
    assert [s for _, s in pooled] == expected  # the budget's best not embedded yet, best first
