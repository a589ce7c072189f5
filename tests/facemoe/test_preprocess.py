"""Evaluation preprocessing and flip fusion against fixtureP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facemoe.checkpoint import load_model
from facemoe.errors import InputError
from facemoe.preprocess import embed_flip_fused, fuse_pre_norm, split_norm, to_model_input


@pytest.fixture(scope="module")
def fixture_p(fixtures_dir):
    return torch.load(fixtures_dir / "fixtureP_preprocess_fusion.pt", weights_only=False)


@pytest.mark.parametrize(
    "resize,antialias,key",
    [
        ("pil", False, "tinyface_input_120"),
        ("tensor", False, "ijbs_input_120_antialias_false"),
        ("tensor", True, "ijbs_input_120_antialias_true"),
    ],
)
def test_preprocessing_matches_official(fixture_p, resize, antialias, key):
    x = to_model_input(fixture_p["image_bgr_uint8_112"].numpy(), resize=resize, antialias=antialias)
    assert x.shape == (1, 3, 120, 120) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], fixture_p[key], atol=1e-6, rtol=0)


def test_flip_fusion_matches_official(fixture_p, fixtures_dir):
    model = load_model(fixtures_dir / fixture_p["fusion_model"])
    x = torch.load(fixtures_dir / fixture_p["fusion_input"])
    with torch.no_grad():
        unit, norm = split_norm(model(x))
        unit_f, norm_f = split_norm(model(torch.flip(x, dims=[3])))
    torch.testing.assert_close(unit, fixture_p["feat_unit"], atol=1e-5, rtol=0)
    torch.testing.assert_close(norm_f, fixture_p["feat_flip_norm"], atol=1e-5, rtol=0)
    fused, fused_norm = fuse_pre_norm([unit, unit_f], [norm, norm_f])
    torch.testing.assert_close(fused, fixture_p["fused_pre_norm_vector_add"], atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_norm, fixture_p["fused_norm"], atol=1e-5, rtol=0)
    one_pass, one_pass_norm = embed_flip_fused(model, x)  # orig + flip as one batch of 2N
    torch.testing.assert_close(one_pass, fixture_p["fused_pre_norm_vector_add"], atol=1e-5, rtol=0)
    torch.testing.assert_close(one_pass_norm, fixture_p["fused_norm"], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "bad,got",
    [
        (np.zeros((112, 112), np.uint8), r"uint8 \(112, 112\)"),
        (np.zeros((120, 120, 3), np.uint8), r"uint8 \(120, 120, 3\)"),
        (np.zeros((112, 112, 3), np.float32), r"float32 \(112, 112, 3\)"),
        (np.zeros((112, 112, 4), np.uint8), r"uint8 \(112, 112, 4\)"),
        ("not an image", "str"),
    ],
)
def test_wrong_crops_are_refused(bad, got):
    with pytest.raises(InputError, match=f"expected an aligned 112x112x3 uint8 BGR image, got {got}"):
        to_model_input([bad])


@pytest.mark.parametrize("resize", ["pil", "tensor"])
def test_zero_crops_give_an_empty_batch(resize):
    assert to_model_input([], resize=resize).shape == (0, 3, 120, 120)
