"""precision auto on a bf16 CPU: bf16 only where the model's bf16 template of probe crops holds cosine 0.999."""

from __future__ import annotations

import logging

import pytest
import torch

from facemoe.checkpoint import load_model
from facemoe.embedder import FaceMoEEmbedder, auto_precision
from facemoe.packed import native_bf16
from facemoe.precision_check import AUTO_BAR, Agreement, bf16_agreement, probe_crops

needs_bf16 = pytest.mark.skipif(not native_bf16(), reason="this CPU has no AVX512-BF16 or AMX")


def test_probe_crops_are_seeded_model_inputs():
    crops = probe_crops(120, 5)
    assert crops.shape == (5, 3, 120, 120) and crops.min() >= -1 and crops.max() <= 1
    torch.testing.assert_close(crops, probe_crops(120, 5), rtol=0, atol=0)
    assert not torch.equal(crops, probe_crops(120, 5, seed=1))


@needs_bf16
@pytest.mark.parametrize("flip", [True, False])
def test_bf16_agreement_of_the_fixture_holds_the_bar_and_leaves_the_model_fp32(fixtures_dir, flip):
    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = bf16_agreement(model, flip=flip)
    assert AUTO_BAR <= got.crop <= got.template + 1e-6 <= 1.0 + 2e-6
    assert got.crop < 1.0 - 1e-9  # bf16 rounding is there: the check compares two different computations
    assert type(model.layers[0].blocks[0].attn.qkv) is torch.nn.Linear
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("cosine,expected", [(0.998, "fp32"), (0.9995, "bf16")])
def test_auto_follows_the_probe_cosine_on_a_bf16_cpu(monkeypatch, fixtures_dir, caplog, cosine, expected):
    import facemoe.embedder as module

    seen = []
    monkeypatch.setattr(module, "native_bf16", lambda: True)
    got = Agreement(cosine, 0.99)
    monkeypatch.setattr(module, "bf16_agreement", lambda model, flip: seen.append(flip) or got)
    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    precision, reason = auto_precision("cpu", model, flip=False)
    assert precision == expected and seen == [False]
    assert reason.startswith("this CPU multiplies bf16 in hardware") and f"{cosine:.5f} " in reason
    assert "(lowest crop 0.99000)" in reason
    assert auto_precision("cpu") == ("bf16", "this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX)")
    if expected == "fp32":
        with caplog.at_level(logging.INFO, logger="facemoe.embedder"):
            auto = FaceMoEEmbedder(model, precision="auto")
        assert auto.precision == "fp32" and "-k2-fp32-flip" in auto.embedder_id
        assert (
            "auto: fp32 on cpu (this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), but" in caplog.text
        )
        expected_line = "template of probe crops falls to cosine 0.99800 of fp32 (lowest crop 0.99000), below"
        assert f"{expected_line} {AUTO_BAR}" in caplog.text


@needs_bf16
def test_auto_with_the_fixture_weights_is_bf16_and_says_the_cosine(fixtures_dir, caplog):
    with caplog.at_level(logging.INFO, logger="facemoe.embedder"):
        auto = FaceMoEEmbedder(load_model(fixtures_dir / "fixtureA_perturbed_state.pt"), precision="auto")
    assert auto.precision == "bf16"
    assert "the bf16 template of probe crops holds cosine" in caplog.text and f">= {AUTO_BAR}" in caplog.text
