"""CPU int8 dynamic quantisation: every linear layer but the routers, close to fp32, original left intact."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from facemoe.model import create_facemoe
from facemoe.quantize import quantize_int8

SMALL = dict(embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], drop_path_rate=0.0)


@pytest.fixture(scope="module")
def fixture_a(fixtures_dir):
    model = create_facemoe(**SMALL, num_experts=3, k=2)
    model.load_state_dict(torch.load(fixtures_dir / "fixtureA_perturbed_state.pt"), strict=True)
    return model.eval()


def _float_linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is nn.Linear]


def test_experts_and_attention_are_int8_routers_stay_fp32(fixture_a):
    quantized = quantize_int8(fixture_a)
    assert _float_linears(quantized) == [n for n in _float_linears(fixture_a) if n.endswith("router.gate")]
    assert len(_float_linears(quantized)) == 6  # one router per MoE block
    expert = quantized.layers[1].blocks[0].mlp.experts[2].fc1
    assert expert.weight().dtype == torch.qint8
    assert len(_float_linears(fixture_a)) > 6  # the fp32 model is left untouched


def test_int8_embeddings_agree_with_fp32(fixture_a, fixtures_dir):
    x = torch.load(fixtures_dir / "fixtureA_input.pt")
    quantized = quantize_int8(fixture_a)
    with torch.no_grad():
        expected, expected_aux = fixture_a.forward_with_aux(x)
        got, aux = quantized.forward_with_aux(x)
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    assert cosine.min() > 0.99, cosine
    assert float(aux) == pytest.approx(float(expected_aux), rel=0.05)
    assert not torch.equal(got, expected)  # really quantised, not the fp32 path


@pytest.mark.parametrize("batch", [1, 5])
def test_int8_runs_any_batch_size(fixture_a, batch):
    quantized = quantize_int8(fixture_a)
    with torch.no_grad():
        out = quantized(torch.rand(batch, 3, 120, 120) * 2 - 1)
    assert out.shape == (batch, 512) and torch.isfinite(out).all()


def test_inplace_returns_the_same_model_in_eval_mode():
    model = create_facemoe(**SMALL).train()
    assert quantize_int8(model, inplace=True) is model
    assert not model.training and len(_float_linears(model)) == 6


def test_model_off_the_cpu_is_refused():
    with torch.device("meta"):
        model = create_facemoe(**SMALL)
    with pytest.raises(ValueError, match="CPU, got parameters on \\['meta'\\]"):
        quantize_int8(model)
