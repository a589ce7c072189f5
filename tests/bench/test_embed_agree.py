"""Routing agreement, templates check and the int8-kept engine of bench/embed.py on a tiny FaceMoE."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.bench.conftest import load_bench

TINY = dict(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 4))


@pytest.fixture(scope="module")
def tiny():
    from facemoe.model import create_facemoe

    torch.manual_seed(0)
    model = create_facemoe(**TINY).eval()
    x = torch.rand(4, 3, model.cfg.img_size, model.cfg.img_size, generator=torch.Generator().manual_seed(1))
    return model, x * 2 - 1


def _agreement(reference, other, x):
    agree = load_bench("embed_agree")
    records = []
    for model in (reference, other):
        with agree.record_routing(model) as record, torch.inference_mode():
            model(x)
        records.append(record)
    return agree.routing_agreement(*records), agree.OVERALL


def test_identical_models_agree_on_every_token(tiny):
    model, x = tiny
    shares, overall = _agreement(model, copy.deepcopy(model), x)
    routers = [n.removesuffix(".router") for n, _ in model.named_modules() if n.endswith(".router")]
    assert sorted(shares) == sorted([*routers, overall]) and len(routers) == 6
    assert all(share == 1.0 for share in shares.values())


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_a_perturbed_router_lowers_its_agreement(tiny, scale):
    model, x = tiny
    other = copy.deepcopy(model)
    gate = other.layers[1].blocks[0].mlp.router.gate
    with torch.no_grad():
        gate.weight.add_(
            scale
            * gate.weight.std()
            * torch.randn(gate.weight.shape, generator=torch.Generator().manual_seed(3))
        )
    shares, overall = _agreement(model, other, x)
    assert shares["layers.1.blocks.0.mlp"] < 1.0
    assert all(shares[f"layers.0.blocks.{b}.mlp"] == 1.0 for b in (0, 1))  # upstream of the change
    assert shares["layers.1.blocks.0.mlp"] <= shares[overall] < 1.0


def test_records_of_other_routers_are_refused():
    agree = load_bench("embed_agree")
    picks = [torch.tensor([[0, 1]])]
    with pytest.raises(ValueError, match="different routers"):
        agree.routing_agreement({"a": picks}, {"b": picks})


def test_templates_check_is_one_for_the_same_model_and_below_for_another(tiny):
    model, x = tiny
    other = copy.deepcopy(model)
    head = next(m for m in other.feature_layer if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        head.weight.mul_(1 + 0.2 * torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(2)))
    got = load_bench("embed_agree").template_cosines({"model": model, "same": model, "other": other}, x, 3)
    assert sorted(got) == ["other", "same"]
    assert got["same"]["crop"] == pytest.approx((1.0, 1.0), abs=1e-6)
    assert got["same"]["template"] == pytest.approx((1.0, 1.0), abs=1e-6)
    assert got["other"]["crop"][1] < 0.999 and got["other"]["template"][1] < 1.0


def test_embed_bench_reports_routing_the_kept_int8_engine_and_the_templates(capsys):
    argv = ["--small", "--batches", "2", "--repeats", "1", "--no-onnx", "--no-bf16"]
    argv += [
        "--int8-keep",
        "layers.1.blocks.0.mlp,layers.2",
        "--template-crops",
        "3",
        "--crops-per-template",
        "2",
    ]
    assert load_bench("embed").main(argv) == 0
    out = capsys.readouterr().out
    assert "int8 kept: int8 with embed.int8_fp32_layers [layers.1.blocks.0.mlp, layers.2] in fp32" in out
    header = next(line for line in out.splitlines() if line.startswith("| batch"))
    for column in ("int8 routing equal (lowest layer)", "int8 kept crops/s", "int8 kept cosine mean (min)"):
        assert column in header
    row = next(line for line in out.splitlines() if line.startswith("| 2 |")).strip("| ").split(" | ")
    routing = row[header.strip("| ").split(" | ").index("int8 kept routing equal (lowest layer)")]
    assert 0.0 <= float(routing.split()[0]) <= 1.0
    templates = [line for line in out.splitlines() if line.startswith("| int8")]
    assert [line.split(" | ")[0] for line in templates] == ["| int8", "| int8 kept"]
    assert all(line.endswith(("| yes |", "| no |")) for line in templates)
