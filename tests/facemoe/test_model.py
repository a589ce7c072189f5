"""The backbone against the official fixtures: eval, train, aux losses, routing, and the paper key set."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import facemoe.registry  # noqa: F401  (registers the timm variants)
from facemoe.checkpoint import load_model
from facemoe.model import FaceMoE, FaceMoEConfig
from facemoe.moe import MoEMlp, load_balance_loss, router_z_loss

SMALL = dict(embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], drop_path_rate=0.0)
SETS = {"A": dict(SMALL, num_experts=3, k=2), "C": dict(SMALL, use_moe=False)}
CASES = [(name, variant) for name in SETS for variant in ("", "_perturbed")]
ATOL = 1e-5


def _load(fixtures_dir, name):
    return torch.load(fixtures_dir / name, weights_only=False)


def _model(fixtures_dir, name, variant) -> FaceMoE:
    """Through the project's official-checkpoint loader, with the fixture's constructor (drop_path 0)."""
    model = load_model(fixtures_dir / f"fixture{name}{variant}_state.pt", drop_path_rate=0.0)
    assert model.cfg == FaceMoEConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in SETS[name].items()}
    )
    return model


@pytest.mark.parametrize("name,variant", CASES)
def test_eval_output_and_aux(fixtures_dir, name, variant):
    model = _model(fixtures_dir, name, variant).eval()
    x = _load(fixtures_dir, f"fixture{name}_input.pt")
    with torch.no_grad():
        out, aux = model.forward_with_aux(x)
        plain = model(x)
    torch.testing.assert_close(
        out, _load(fixtures_dir, f"fixture{name}{variant}_eval_out.pt"), atol=ATOL, rtol=0
    )
    torch.testing.assert_close(plain, out, atol=0, rtol=0)
    expected = _load(fixtures_dir, f"fixture{name}{variant}_aux.pt")
    assert float(aux) == pytest.approx(float(expected["eval_aux_loss"]), abs=ATOL)
    if name == "C":
        assert aux == 0.0 and isinstance(aux, float)


@pytest.mark.parametrize("name,variant", CASES)
def test_train_output_aux_and_bn_stats(fixtures_dir, name, variant):
    model = _model(fixtures_dir, name, variant).train()
    x = _load(fixtures_dir, f"fixture{name}_input.pt")
    expected = _load(fixtures_dir, f"fixture{name}{variant}_aux.pt")
    bn = model.feature_layer[-1]
    seen = {}
    hook = bn.register_forward_hook(lambda module, args, out: seen.update(pre=args[0].detach()))
    torch.manual_seed(expected["train_seed"])
    out, aux = model.forward_with_aux(x)
    hook.remove()
    official = _load(fixtures_dir, f"fixture{name}{variant}_train_out.pt")
    # The last train-mode BatchNorm divides by the batch spread of each feature: with fixture C's batch of 2 a
    # few features have a spread of ~1e-3, which turns fp32 rounding (BLAS-dependent) into ~1e-4 at the output.
    # Mapped back through that division the error is ~1e-6 everywhere; well-spread features agree at the output.
    spread = torch.sqrt(seen["pre"].var(0, unbiased=False) + bn.eps)
    torch.testing.assert_close(
        (out - official) / bn.weight * spread, torch.zeros_like(out), atol=ATOL, rtol=0
    )
    well = spread > 0.05 * spread.median()
    assert well.float().mean() > 0.95
    torch.testing.assert_close(out[:, well], official[:, well], atol=ATOL, rtol=0)
    assert float(aux) == pytest.approx(float(expected["train_aux_loss"]), abs=ATOL)
    state = model.state_dict()
    for key, value in expected[
        "train_feature_layer_bn_buffers_after_forward"
    ].items():  # running var up to ~4
        torch.testing.assert_close(state[key], value, atol=ATOL, rtol=ATOL)
    if name == "A":
        out.sum().add(aux).backward()  # aux keeps its graph: routers receive gradients
        assert model.layers[0].blocks[0].mlp.router.gate.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("chunk_tokens", [0, 1, 400, 1000, 10**6])
def test_eval_micro_batches_give_the_whole_batch_result(fixtures_dir, chunk_tokens):
    model = _model(fixtures_dir, "A", "_perturbed").eval()
    model.eval_chunk_tokens = chunk_tokens
    x = _load(fixtures_dir, "fixtureA_input.pt")  # 4 images, 400 tokens each in stage 1
    x = torch.cat([x, x[:1]])
    calls = []
    model.layers[0].register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    with torch.no_grad():
        out = model(x)
        whole, _ = model.forward_with_aux(x)
    torch.testing.assert_close(out, whole, atol=ATOL, rtol=0)
    torch.testing.assert_close(
        out[:4], _load(fixtures_dir, "fixtureA_perturbed_eval_out.pt"), atol=ATOL, rtol=0
    )
    expected = {0: [5], 1: [1] * 5, 400: [1] * 5, 1000: [2, 2, 1], 10**6: [5]}[chunk_tokens]
    assert calls[:-1] == expected  # the last call is forward_with_aux's whole batch


def test_train_mode_forward_is_never_split(fixtures_dir):
    model = _model(fixtures_dir, "A", "").train()
    model.eval_chunk_tokens = 400
    calls = []
    model.layers[0].register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    model(torch.rand(3, 3, 120, 120) * 2 - 1)
    assert calls == [3]


@pytest.mark.parametrize("variant", ["", "_perturbed"])
def test_per_block_aux_and_first_block_routing(fixtures_dir, variant):
    model = _model(fixtures_dir, "A", variant).eval()
    x = _load(fixtures_dir, "fixtureA_input.pt")
    expected = _load(fixtures_dir, f"fixtureA{variant}_aux.pt")["eval_aux_loss_per_block"]
    routing = _load(fixtures_dir, f"fixtureA{variant}_routing.pt")
    seen = {}

    def hook(module, inputs, output):
        tokens = inputs[0].reshape(-1, inputs[0].shape[-1])
        seen["route"] = module.router(tokens)
        seen["out"] = output[0]

    blocks = {
        f"layers.{i}.blocks.{j}": b
        for i, layer in enumerate(model.layers)
        for j, b in enumerate(layer.blocks)
    }
    aux_seen = {}
    for key, block in blocks.items():
        block.register_forward_hook(lambda m, i, o, key=key: aux_seen.__setitem__(key, float(o[1])))
    model.layers[0].blocks[0].mlp.register_forward_hook(hook)
    with torch.no_grad():
        model(x)
    for key, value in expected.items():
        assert aux_seen[key] == pytest.approx(float(value), abs=ATOL), key
    first = {k: v for k, v in routing.items() if torch.is_tensor(v)}
    n = first["topk_indices"].shape[0]  # image 0 = router rows 0..399
    assert torch.equal(seen["route"].indices[:n], first["topk_indices"])
    torch.testing.assert_close(seen["route"].gates[:n], first["gate_values"], atol=ATOL, rtol=0)
    torch.testing.assert_close(seen["route"].logits[:n], first["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(
        seen["out"].reshape(-1, seen["out"].shape[-1])[:n],
        first["mlp_output"].reshape(n, -1),
        atol=ATOL,
        rtol=0,
    )


def test_paper_variant_matches_release_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "manifest_swin_moe_e3k2.json").read_text())
    with torch.device("meta"):
        model = timm.create_model("facemoe_swin_e3k2")
    state = model.state_dict()
    assert [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()] == [
        (e["key"], e["shape"], e["dtype"]) for e in manifest["state_dict"]
    ]
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"]


def test_gates_are_raw_logits_and_can_be_negative():
    torch.manual_seed(0)
    moe = MoEMlp(dim=8, hidden_dim=16, num_experts=3, k=2).eval()
    x = torch.randn(2, 10, 8)
    out, aux = moe(x)
    tokens = x.reshape(-1, 8)
    logits = moe.router.gate(tokens)
    gates, idx = logits.topk(2, dim=1)
    expected = torch.zeros_like(tokens)
    for e, expert in enumerate(moe.experts):  # the original per-expert loop
        rows, slot = torch.where(idx == e)
        expected[rows] += expert(tokens[rows]) * gates[rows, slot, None]
    torch.testing.assert_close(out.reshape(-1, 8), expected, atol=1e-6, rtol=0)
    assert (gates < 0).any()
    assert float(aux) == pytest.approx(
        float(router_z_loss(logits) + load_balance_loss(logits, idx)), abs=1e-7
    )


def _loop_dispatch(moe: MoEMlp, tokens: torch.Tensor) -> torch.Tensor:
    """The original per-expert loop, its buffer in the dtype of the gated expert outputs."""
    gates, idx = moe.router.gate(tokens).topk(moe.k, dim=1)
    parts = []
    for e, expert in enumerate(moe.experts):
        rows, slot = torch.where(idx == e)
        parts.append((rows, expert(tokens[rows]) * gates[rows, slot, None]))
    out = torch.zeros(tokens.shape, dtype=parts[0][1].dtype)
    for rows, y in parts:
        out[rows] += y
    return out


@pytest.mark.parametrize("dispatch", ["sorted", "traceable"])
def test_moe_under_cpu_bf16_autocast(dispatch):
    torch.manual_seed(0)
    moe = MoEMlp(dim=8, hidden_dim=16, num_experts=3, k=2)
    x = torch.randn(2, 10, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if dispatch == "sorted":
            out, aux = moe(x)
        else:
            tokens = x.reshape(-1, 8)
            out = moe._dispatch_traceable(tokens, moe.router(tokens))
            aux = torch.zeros(())
        expected = _loop_dispatch(moe, x.detach().reshape(-1, 8))
    # the routers stay fp32 under autocast, so the gated sum of the bf16 experts is fp32
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.reshape(-1, 8).float(), expected.float(), atol=2e-2, rtol=2e-2)
    (out.float().sum() + aux).backward()
    assert torch.isfinite(x.grad).all() and moe.experts[0].fc1.weight.grad is not None


def test_router_logits_stay_fp32_under_autocast_and_in_a_bf16_model():
    torch.manual_seed(0)
    moe = MoEMlp(dim=32, hidden_dim=64, num_experts=3, k=2).eval()
    tokens = torch.randn(200, 32)
    with torch.no_grad():
        exact = moe.router.gate(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            route = moe.router(tokens)
        assert route.logits.dtype == route.gates.dtype == torch.float32
        torch.testing.assert_close(route.logits, exact)  # not rounded to bf16 (about 4e-3 relative)
        half = MoEMlp(dim=32, hidden_dim=64, num_experts=3, k=2).eval()
        half.load_state_dict(moe.state_dict())
        half.to(torch.bfloat16)
        route = half.router(tokens.to(torch.bfloat16))
        out, aux = half(tokens.to(torch.bfloat16).reshape(4, 50, 32))
    assert route.logits.dtype == torch.float32 and route.gates.dtype == torch.bfloat16
    torch.testing.assert_close(
        route.logits, tokens.to(torch.bfloat16).float() @ half.router.gate.weight.float().T
    )
    assert out.dtype == torch.bfloat16 and aux.dtype == torch.float32


@pytest.mark.parametrize("k", [1, 2])
def test_balance_loss_under_uniform_routing(k):
    logits = torch.zeros(6, 3)
    idx = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 1], [1, 2], [2, 0]])[:, :k]
    assert float(load_balance_loss(logits, idx)) == pytest.approx(1e-2 * k)


def test_expert_without_tokens_is_skipped():
    moe = MoEMlp(dim=4, hidden_dim=8, num_experts=3, k=1)
    with torch.no_grad():
        moe.router.gate.weight.zero_()
        moe.router.gate.weight[1] = 1.0  # every positive token picks expert 1
    out, _ = moe(torch.ones(1, 5, 4))
    assert torch.isfinite(out).all()
    empty, _ = moe(torch.ones(0, 5, 4))  # no tokens at all
    assert empty.shape == (0, 5, 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_experts=2, k=3), "top-k"),
        (dict(depths=(2, 2), num_heads=(2, 4, 4)), "same length"),
        (dict(img_size=121), "multiple"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FaceMoEConfig(**kwargs)
