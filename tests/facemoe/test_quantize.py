"""CPU int8: attention and expert linear layers quantised (routers, patch merges, head kept), close to fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facemoe.model import create_facemoe
from facemoe.quantize import Int8Linear, quantize_int8

SMALL = dict(embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], drop_path_rate=0.0)


@pytest.fixture(scope="module")
def fixture_a(fixtures_dir):
    model = create_facemoe(**SMALL, num_experts=3, k=2)
    model.load_state_dict(torch.load(fixtures_dir / "fixtureA_perturbed_state.pt"), strict=True)
    return model.eval()


def _float_linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is nn.Linear]


def _kept(name: str) -> bool:
    return name.endswith(("router.gate", "reduction")) or name.startswith("feature_layer")


def test_experts_and_attention_are_int8_routers_merges_and_head_stay_fp32(fixture_a):
    quantized = quantize_int8(fixture_a)
    assert _float_linears(quantized) == [n for n in _float_linears(fixture_a) if _kept(n)]
    assert len(_float_linears(quantized)) == 6 + 2 + 1  # a router per MoE block, two merges, the head
    int8 = {name: m for name, m in quantized.named_modules() if isinstance(m, Int8Linear)}
    assert len(int8) == len(_float_linears(fixture_a)) - 9
    expert = quantized.layers[1].blocks[0].mlp.experts[2]
    assert expert.fc1.qweight.dtype == torch.int8 and not expert.fc1.asymmetric and expert.fc2.asymmetric
    assert len(_float_linears(fixture_a)) > 9  # the fp32 model is left untouched


def test_int8_embeddings_agree_with_fp32(fixture_a, fixtures_dir):
    x = torch.load(fixtures_dir / "fixtureA_input.pt")
    quantized = quantize_int8(fixture_a)
    with torch.no_grad():
        expected, expected_aux = fixture_a.forward_with_aux(x)
        got, aux = quantized.forward_with_aux(x)
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    assert cosine.min() > 0.995, cosine
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
    assert not model.training and len(_float_linears(model)) == 9


def test_model_off_the_cpu_is_refused():
    with torch.device("meta"):
        model = create_facemoe(**SMALL)
    with pytest.raises(ValueError, match="CPU, got parameters on \\['meta'\\]"):
        quantize_int8(model)


@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("shape", [(1, 64), (3, 5, 64), (0, 64)])
def test_int8_linear_is_close_to_the_float_layer(asymmetric, shape):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(shape)
    if asymmetric:
        x = torch.nn.functional.gelu(x) + 3.0  # all positive: the case the zero point is for
    got, expected = Int8Linear(linear, asymmetric)(x), linear(x).detach()
    assert got.shape == expected.shape and got.dtype == torch.float32
    if expected.numel():
        assert float((got - expected).norm() / expected.norm()) < 0.02


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_constant_and_zero_rows(bias):
    linear = nn.Linear(8, 4, bias=bias)
    x = torch.stack([torch.zeros(8), torch.full((8,), 2.5)])
    for asymmetric in (False, True):
        got = Int8Linear(linear, asymmetric)(x)
        torch.testing.assert_close(got, linear(x).detach(), atol=0.02, rtol=0.02)


def test_int8_linear_refuses_a_wrong_width():
    with pytest.raises(ValueError, match="expected 8 input features, got 9"):
        Int8Linear(nn.Linear(8, 4))(torch.zeros(2, 9))


def _with_outlier_channels(model: nn.Module, factor: float = 30.0) -> nn.Module:
    """Every 4th LayerNorm channel ``factor`` times larger, its readers' columns divided back: same fp32 model."""
    from facemoe.model import SwinBlock

    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, SwinBlock):
                readers2 = [block.mlp.router.gate] + [expert.fc1 for expert in block.mlp.experts]
                for norm, readers in ((block.norm1, [block.attn.qkv]), (block.norm2, readers2)):
                    channels = torch.arange(0, norm.weight.numel(), 4)
                    norm.weight[channels] *= factor
                    norm.bias[channels] += 0.5 * factor
                    for linear in readers:
                        linear.weight[:, channels] /= factor
    return model


def test_norm_smoothing_leaves_the_fp32_model_unchanged():
    from facemoe.quantize import smooth_norm_outputs

    torch.manual_seed(0)
    model = _with_outlier_channels(create_facemoe(**SMALL).eval())
    x = torch.rand(2, 3, 120, 120) * 2 - 1
    with torch.no_grad():
        expected = model(x)
        assert smooth_norm_outputs(model) == 12  # two norms in each of the six blocks
        got = model(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert model.layers[0].blocks[0].norm1.weight.max() < 30  # the outlier scale moved into the readers


def test_norm_smoothing_restores_int8_accuracy_on_outlier_channels():
    from facemoe.quantize import smooth_norm_outputs

    torch.manual_seed(0)
    model = _with_outlier_channels(create_facemoe(**SMALL).eval())
    block = model.layers[0].blocks[0]
    x = torch.randn(64, 32)

    def int8_error() -> float:
        with torch.no_grad():
            inputs = block.norm1(x)
            expected = block.attn.qkv(inputs)
            got = Int8Linear(block.attn.qkv)(inputs)
        return float((got - expected).norm() / expected.norm())

    plain = int8_error()
    smooth_norm_outputs(model)
    assert int8_error() < plain / 3


def test_layer_groups_name_each_blocks_attention_and_experts(fixture_a):
    from facemoe.quantize import layer_groups, quantizable_layers

    groups = layer_groups(fixture_a)
    assert len(groups) == 12 and groups[:2] == ["layers.0.blocks.0.attn", "layers.0.blocks.0.mlp"]
    layers = quantizable_layers(fixture_a)
    assert len(layers) == len(_float_linears(fixture_a)) - 9
    assert all(any(name.startswith(g + ".") for g in groups) for name in layers)


def test_keep_fp32_leaves_the_named_layers_float(fixture_a):
    quantized = quantize_int8(fixture_a, keep_fp32=["layers.1.blocks.0.mlp", "layers.2.blocks.1.attn.qkv"])
    kept = [n for n in _float_linears(quantized) if not _kept(n)]
    assert kept == [
        *(f"layers.1.blocks.0.mlp.experts.{e}.fc{i}" for e in range(3) for i in (1, 2)),
        "layers.2.blocks.1.attn.qkv",
    ]
    assert isinstance(quantized.layers[2].blocks[1].attn.proj, Int8Linear)


def test_keeping_every_group_is_the_fp32_model(fixture_a):
    from facemoe.quantize import layer_groups

    x = torch.rand(2, 3, 120, 120) * 2 - 1
    quantized = quantize_int8(fixture_a, keep_fp32=layer_groups(fixture_a))
    assert not any(isinstance(m, Int8Linear) for m in quantized.modules())
    with torch.no_grad():
        torch.testing.assert_close(quantized(x), fixture_a(x), atol=1e-5, rtol=1e-4)  # smoothing is exact


def test_keep_fp32_refuses_a_name_that_covers_no_layer(fixture_a):
    with pytest.raises(ValueError, match=r"'layers.0.blocks.0.mlp.router' names no quantisable layer"):
        quantize_int8(fixture_a, keep_fp32=["layers.0.blocks.0.attn", "layers.0.blocks.0.mlp.router"])
