from __future__ import annotations

import numpy as np
import pytest

from core.types import FaceCrop, Quality
from stages.aggregate import Aggregator
from stages.config import AggregateConfig


def _crop(track=1, source="v.mp4"):
    return FaceCrop(source, track, 0, 0.0, np.zeros((112, 112, 3), np.uint8), Quality(30.0, 0.9, 50.0, 0.1))


def _data(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, dim))
    norms = np.linalg.norm(raw, axis=1)
    return (raw / norms[:, None]).astype(np.float32), norms.astype(np.float32), rng.uniform(0.1, 1, n)


def test_pre_norm_vector_add_without_quality():
    feats, norms, scores = _data(5)
    agg = Aggregator(AggregateConfig(quality_power=0.0), 8)
    agg.add([_crop() for _ in range(5)], feats, norms, scores)
    tpl = agg.pop("v.mp4", 1).template(0.0, 1.0, 9)
    expected = (feats * norms[:, None]).sum(0)
    np.testing.assert_allclose(tpl.embedding, expected / np.linalg.norm(expected), atol=1e-6)
    assert tpl.num_crops == 5 and tpl.num_frames == 9


def test_quality_weights_on_top():
    feats, norms, scores = _data(4, seed=1)
    agg = Aggregator(AggregateConfig(quality_power=2.0), 8)
    agg.add([_crop() for _ in range(4)], feats, norms, scores)
    fused = (feats * (norms * scores**2)[:, None]).sum(0)
    np.testing.assert_allclose(
        agg.pop("v.mp4", 1).template(0, 1, 4).embedding, fused / np.linalg.norm(fused), atol=1e-6
    )


def test_incremental_equals_batch():
    feats, norms, scores = _data(6, seed=2)
    one, many = Aggregator(AggregateConfig(), 8), Aggregator(AggregateConfig(), 8)
    crops = [_crop() for _ in range(6)]
    one.add(crops, feats, norms, scores)
    for i in range(6):
        many.add(crops[i : i + 1], feats[i : i + 1], norms[i : i + 1], scores[i : i + 1])
    a, b = one.pop("v.mp4", 1), many.pop("v.mp4", 1)
    np.testing.assert_allclose(a.total, b.total, atol=1e-9)
    assert a.best is crops[int(np.argmax(scores))] and crops[0].quality.feature_norm == pytest.approx(
        norms[0]
    )


def test_tracks_and_sources_stay_apart():
    feats, norms, scores = _data(3, seed=3)
    agg = Aggregator(AggregateConfig(), 8)
    agg.add([_crop(1), _crop(2), _crop(1, "w.mp4")], feats, norms, scores)
    np.testing.assert_allclose(agg.pop("v.mp4", 2).template(0, 1, 1).embedding, feats[1], atol=1e-6)


def test_track_without_crops():
    tpl = Aggregator(AggregateConfig(), 8).pop("v.mp4", 5).template(1.0, 2.0, 3)
    assert tpl.num_crops == 0 and not tpl.embedding.any()


def test_length_mismatch():
    feats, norms, scores = _data(2)
    with pytest.raises(ValueError, match="equal lengths"):
        Aggregator(AggregateConfig(), 8).add([_crop()], feats, norms, scores)
