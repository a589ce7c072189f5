from __future__ import annotations

import numpy as np

from stages.config import ShotConfig
from stages.shot import ShotCutDetector


def _frame(colour, noise_seed=0):
    rng = np.random.default_rng(noise_seed)
    img = np.empty((90, 160, 3), np.uint8)
    img[:] = colour
    return np.clip(img + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)


def test_cut_between_different_scenes_only():
    det = ShotCutDetector(ShotConfig())
    flags = [
        det.is_cut(f)
        for f in [
            _frame((30, 90, 200), 0),
            _frame((30, 90, 200), 1),
            _frame((200, 40, 20), 2),
            _frame((200, 40, 20), 3),
        ]
    ]
    assert flags == [False, False, True, False]


def test_disabled():
    det = ShotCutDetector(ShotConfig(enabled=False))
    assert not any(det.is_cut(_frame(c)) for c in [(0, 0, 255), (255, 0, 0)])
