"""The authors' augmentations: each one's effect, determinism per generator, the 120 px model input."""

from __future__ import annotations

import numpy as np
import pytest

from facemoe.train.augment import Augmenter, to_train_tensor
from facemoe.train.config import AugmentSection

IMG = np.random.default_rng(0).integers(1, 255, (112, 112, 3), dtype=np.uint8)
NONE = {"crop_prob": 0, "low_res_prob": 0, "photometric_prob": 0, "flip_prob": 0}


def test_nothing_applied_is_identity():
    out, px = Augmenter(AugmentSection(**NONE))(IMG, np.random.default_rng(0))
    assert np.array_equal(out, IMG) and px == 112


def test_crop_keeps_a_box_in_place_and_zeros_the_rest():
    out, _ = Augmenter(AugmentSection(**{**NONE, "crop_prob": 1, "crop_scale": (0.2, 0.3)}))(
        IMG, np.random.default_rng(1)
    )
    kept = (out != 0).any(axis=2)
    rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert np.array_equal(out[box], IMG[box])  # same pixels, same place: no resize
    assert 0.15 * 112 * 112 <= kept.sum() <= 0.35 * 112 * 112


def test_low_resolution_reports_the_effective_size():
    aug = Augmenter(AugmentSection(**{**NONE, "low_res_prob": 1, "low_res_scale": (0.2, 0.2)}))
    out, px = aug(IMG, np.random.default_rng(2))
    assert out.shape == IMG.shape and px == pytest.approx(22)  # int(0.2 * 112) = 22
    assert np.abs(out.astype(int) - IMG.astype(int)).mean() > 20  # detail is gone


def test_flip_and_photometric():
    flipped, _ = Augmenter(AugmentSection(**{**NONE, "flip_prob": 1}))(IMG, np.random.default_rng(0))
    assert np.array_equal(flipped, IMG[:, ::-1])
    gray = np.full((112, 112, 3), 100, np.uint8)
    jittered, _ = Augmenter(AugmentSection(**{**NONE, "photometric_prob": 1}))(gray, np.random.default_rng(3))
    assert jittered.std() == 0 and jittered[0, 0, 0] != 100  # a flat image only changes in brightness


def test_same_generator_same_result():
    aug = Augmenter(AugmentSection(crop_prob=0.5, low_res_prob=0.5, photometric_prob=0.5))
    a = aug(IMG, np.random.default_rng([7, 11]))
    b = aug(IMG, np.random.default_rng([7, 11]))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_train_tensor_range_and_size():
    x = to_train_tensor(np.array([[[0, 255, 127]]], np.uint8).repeat(112, 0).repeat(112, 1))
    assert x.shape == (3, 120, 120)
    assert x[0].max() == -1.0 and x[1].min() == 1.0 and abs(float(x[2, 0, 0]) + 0.0039) < 1e-3
