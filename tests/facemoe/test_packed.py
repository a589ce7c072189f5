"""oneDNN-packed CPU inference: same outputs as the official fixtures, refused where it cannot apply."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import Mlp
from torch import nn

from facemoe.checkpoint import load_model
from facemoe.model import create_facemoe
from facemoe.moe import TopKRouter
from facemoe.packed import PackedLinear, PackedMlp, native_bf16, pack_for_cpu, packing_available

pytestmark = pytest.mark.skipif(
    not packing_available(), reason="this PyTorch build has no oneDNN CPU kernels"
)

SMALL = dict(embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], drop_path_rate=0.0)
needs_bf16 = pytest.mark.skipif(not native_bf16(), reason="this CPU has no AVX512-BF16 or AMX")


@pytest.mark.parametrize("name", ["A", "A_perturbed", "C", "C_perturbed"])
def test_packed_model_reproduces_the_official_eval_outputs(fixtures_dir, name):
    model = pack_for_cpu(load_model(fixtures_dir / f"fixture{name}_state.pt", drop_path_rate=0.0).train())
    assert not model.training
    x = torch.load(fixtures_dir / f"fixture{name[0]}_input.pt")
    with torch.inference_mode():
        out, aux = model.forward_with_aux(x)
        chunked = model(x)
    expected = torch.load(fixtures_dir / f"fixture{name}_eval_out.pt")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=0)
    if name.startswith("A"):
        expected_aux = torch.load(fixtures_dir / f"fixture{name}_aux.pt")["eval_aux_loss"]
        assert float(aux) == pytest.approx(float(expected_aux), abs=1e-5)


def test_every_linear_but_the_routers_is_packed_and_expert_gelu_fused(fixtures_dir):
    model = pack_for_cpu(load_model(fixtures_dir / "fixtureA_state.pt"))
    plain = [name for name, m in model.named_modules() if type(m) is nn.Linear]
    assert plain and all(name.endswith("router.gate") for name in plain)
    assert not any(type(m) is Mlp for m in model.modules())
    expert = model.layers[1].blocks[0].mlp.experts[0]
    assert isinstance(expert, PackedMlp) and expert.fc1.attr == "gelu" and expert.fc2.attr == "none"
    assert isinstance(model.layers[0].blocks[0].mlp.router, TopKRouter)
    assert isinstance(model.feature_layer[2], PackedLinear)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gelu", [None, "none", "tanh"])
@pytest.mark.parametrize("shape", [(0, 48), (1, 48), (7, 48), (2, 25, 48)])
def test_packed_linear_equals_the_float_layer(bias, gelu, shape):
    torch.manual_seed(0)
    linear = nn.Linear(48, 40, bias=bias)
    x = torch.randn(shape)
    expected = linear(x)
    if gelu is not None:
        expected = nn.functional.gelu(expected, approximate=gelu)
    with torch.inference_mode():
        got = PackedLinear(linear, gelu=gelu)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=1e-5)


def test_packed_linear_refuses_a_wrong_width():
    with pytest.raises(ValueError, match="expected 8 input features, got 9"):
        PackedLinear(nn.Linear(8, 4))(torch.zeros(2, 9))


def test_packed_model_cannot_be_copied():
    model = pack_for_cpu(create_facemoe(**SMALL))
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(model)


@pytest.mark.parametrize("dtype,device", [(torch.float64, "cpu"), (torch.float32, "meta")])
def test_model_not_in_cpu_float32_is_refused(dtype, device):
    with torch.device(device):
        model = create_facemoe(**SMALL).to(dtype)
    with pytest.raises(ValueError, match="expects float32 parameters on the CPU, got"):
        pack_for_cpu(model)


@needs_bf16
@pytest.mark.parametrize("name", ["A_perturbed", "C_perturbed"])
def test_bf16_packed_model_is_close_to_the_official_outputs(fixtures_dir, name):
    model = pack_for_cpu(load_model(fixtures_dir / f"fixture{name}_state.pt"), dtype=torch.bfloat16)
    x = torch.load(fixtures_dir / f"fixture{name[0]}_input.pt")
    with torch.inference_mode():
        out = model(x)
    expected = torch.load(fixtures_dir / f"fixture{name}_eval_out.pt")
    assert out.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out, expected).min() > 0.999
    assert not torch.allclose(out, expected, atol=1e-5)  # really bf16, not the fp32 path


@needs_bf16
def test_bf16_packing_keeps_merges_and_head_in_fp32(fixtures_dir):
    model = pack_for_cpu(load_model(fixtures_dir / "fixtureA_state.pt"), dtype=torch.bfloat16)
    block = model.layers[1].blocks[0]
    assert block.attn.qkv.dtype == block.mlp.experts[0].fc2.dtype == torch.bfloat16
    assert block.mlp.experts[0].fc1.float_output is False
    assert model.layers[0].downsample.reduction.dtype == torch.float32
    assert model.feature_layer[2].dtype == torch.float32


@needs_bf16
@pytest.mark.parametrize("shape", [(0, 48), (3, 48), (2, 25, 48)])
def test_bf16_packed_linear_is_close_to_the_float_layer(shape):
    torch.manual_seed(0)
    linear = nn.Linear(48, 40)
    x = torch.randn(shape)
    with torch.inference_mode():
        got = PackedLinear(linear, dtype=torch.bfloat16)(x)
    expected = linear(x).detach()
    assert got.shape == expected.shape and got.dtype == torch.float32
    if expected.numel():
        assert float((got - expected).norm() / expected.norm()) < 0.01


def test_bf16_without_hardware_support_is_refused(monkeypatch):
    from facemoe import packed

    monkeypatch.setattr(packed, "native_bf16", lambda: False)
    with pytest.raises(ValueError, match="bf16 on the CPU needs AVX512-BF16 or AMX"):
        pack_for_cpu(create_facemoe(**SMALL), dtype=torch.bfloat16)


def test_unsupported_dtype_is_refused():
    with pytest.raises(ValueError, match="expected dtype float32 or bfloat16, got torch.float16"):
        pack_for_cpu(create_facemoe(**SMALL), dtype=torch.float16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packing_rounds_expert_rows_up_and_keeps_the_outputs(dtype):
    """Expert GEMMs see row counts in multiples of ROW_MULTIPLE (recurring oneDNN shapes); the result is the same."""
    from facemoe.moe import MoEMlp
    from facemoe.packed import ROW_MULTIPLE

    if dtype == torch.bfloat16 and not native_bf16():
        pytest.skip("this CPU has no AVX512-BF16 or AMX")
    torch.manual_seed(0)
    model = pack_for_cpu(create_facemoe(**SMALL), dtype=dtype)
    moes = [m for m in model.modules() if isinstance(m, MoEMlp)]
    assert moes and all(m.row_multiple == ROW_MULTIPLE for m in moes)
    rows = []
    hooks = [e.register_forward_hook(lambda m, a, o: rows.append(len(a[0]))) for m in moes for e in m.experts]
    x = torch.rand(3, 3, 120, 120) * 2 - 1
    with torch.inference_mode():
        padded = model(x)
        for m in moes:
            m.row_multiple = 0
        exact = model(x)
    for hook in hooks:
        hook.remove()
    assert rows and all(r % ROW_MULTIPLE == 0 for r in rows[: len(rows) // 2])
    assert any(r % ROW_MULTIPLE for r in rows[len(rows) // 2 :])  # without it the counts are the tokens'
    torch.testing.assert_close(padded, exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("multiple", [1, 7, 64, 10_000])
def test_rounded_up_expert_rows_give_the_same_moe_output(multiple):
    from facemoe.moe import MoEMlp

    torch.manual_seed(0)
    moe = MoEMlp(16, 32, num_experts=3, k=2).eval()
    x = torch.randn(2, 25, 16)
    with torch.no_grad():
        expected, aux = moe(x)
        moe.row_multiple = multiple
        got, got_aux = moe(x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert float(got_aux) == float(aux)
