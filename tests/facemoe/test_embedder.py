"""FaceMoEEmbedder: batching, flip fusion, norms, bad input, the one embedder_id formula."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from facemoe.checkpoint import file_tag, load_model
from facemoe.embedder import FaceMoEEmbedder, weights_tag
from facemoe.errors import InputError
from facemoe.preprocess import embed_flip_fused, to_model_input


@pytest.fixture(scope="module")
def embedder(fixtures_dir):
    return FaceMoEEmbedder.from_checkpoint(fixtures_dir / "fixtureA_perturbed_state.pt", batch_size=3)


@pytest.fixture(scope="module")
def crops():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(7)]


def test_embeddings_are_unit_with_norms_and_independent_of_batching(embedder, crops):
    units, norms = embedder.embed(crops)
    assert units.shape == (7, 512) and units.dtype == np.float32 and norms.shape == (7,)
    np.testing.assert_allclose(np.linalg.norm(units, axis=1), 1.0, atol=1e-5)
    assert (norms > 0).all()
    with torch.no_grad():
        ref_unit, ref_norm = embed_flip_fused(embedder.model, to_model_input(crops))
    np.testing.assert_allclose(units, ref_unit.numpy(), atol=1e-5)
    np.testing.assert_allclose(norms, ref_norm.squeeze(1).numpy(), rtol=1e-5)


@pytest.mark.parametrize("n", [0, 1])
def test_zero_and_one_crop(embedder, crops, n):
    units, norms = embedder.embed(crops[:n])
    assert units.shape == (n, 512) and norms.shape == (n,)


def test_embedder_id_names_the_weights_and_mode(fixtures_dir, embedder):
    tag = file_tag(fixtures_dir / "fixtureA_perturbed_state.pt")
    assert embedder.embedder_id == f"facemoe-{tag}-k2-fp32-flip"
    assert embedder.dim == 512


def test_every_constructor_path_gives_the_same_id(fixtures_dir, embedder):
    import timm

    import facemoe.registry  # noqa: F401  (registers the timm variants)

    path = fixtures_dir / "fixtureA_perturbed_state.pt"
    direct = FaceMoEEmbedder(load_model(path), batch_size=5)
    small = dict(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 4))
    hub = timm.create_model(
        "facemoe_swin_e3k2.briar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **small
    )
    via_timm = FaceMoEEmbedder(hub)
    assert direct.embedder_id == via_timm.embedder_id == embedder.embedder_id
    assert FaceMoEEmbedder.from_checkpoint(path, k=1, flip=False).embedder_id.endswith("-k1-fp32")


def test_weights_of_unknown_origin_are_named_by_a_digest(fixtures_dir, embedder):
    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    model.train().eval()  # training mode may change the weights: the file's tag no longer applies
    assert model.checkpoint_tag is None
    digest = weights_tag(model)
    assert FaceMoEEmbedder(model).embedder_id == f"facemoe-{digest}-k2-fp32-flip" != embedder.embedder_id
    other = load_model(fixtures_dir / "fixtureA_state.pt")
    other.checkpoint_tag = None
    assert weights_tag(other) != digest


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(precision="fp16"), "needs a CUDA device"),
        (dict(precision="int4"), "expected auto, fp32, int8, bf16 or fp16"),
        (dict(precision="bf16", device="mps"), "runs on CUDA \\(or bf16 on the CPU\\), got device mps"),
        (dict(batch_size=0), "expected >= 1"),
    ],
)
def test_bad_settings_are_refused(fixtures_dir, kwargs, match):
    from facemoe.checkpoint import load_model

    with pytest.raises(InputError, match=match):
        FaceMoEEmbedder(load_model(fixtures_dir / "fixtureA_state.pt"), **kwargs)


def test_wrong_image_is_refused(embedder):
    with pytest.raises(InputError, match="crop 1: expected an aligned 112x112x3 uint8 BGR image"):
        embedder.embed([np.zeros((112, 112, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)])


def test_int8_quantises_the_given_model_in_place_and_agrees_with_fp32(fixtures_dir, embedder, crops):
    from facemoe.checkpoint import load_model
    from facemoe.quantize import Int8Linear

    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    int8 = FaceMoEEmbedder(model, precision="int8", batch_size=3)
    assert int8.model is model  # no fp32 copy kept alongside
    assert isinstance(model.layers[1].blocks[0].mlp.experts[0].fc1, Int8Linear)
    units, norms = int8.embed(crops)
    expected, expected_norms = embedder.embed(crops)
    assert (units * expected).sum(axis=1).min() > 0.99
    np.testing.assert_allclose(norms, expected_norms, rtol=0.05)
    assert int8.embedder_id == embedder.embedder_id.replace("-fp32-", "-int8-")


@pytest.mark.parametrize("packed", [True, False])
def test_cpu_fp32_packs_the_model_in_place_unless_told_not_to(fixtures_dir, embedder, crops, packed):
    from facemoe.checkpoint import load_model
    from facemoe.packed import PackedMlp, packing_available

    if packed and not packing_available():
        pytest.skip("this PyTorch build has no oneDNN CPU kernels")
    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    fp32 = FaceMoEEmbedder(model, batch_size=3, packed=packed)
    assert fp32.model is model
    assert isinstance(model.layers[1].blocks[0].mlp.experts[0], PackedMlp) is packed
    units, norms = fp32.embed(crops)
    expected, expected_norms = embedder.embed(crops)
    np.testing.assert_allclose(units, expected, atol=1e-5)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-5)
    assert fp32.embedder_id == embedder.embedder_id  # packing is the same math: same embedding space


def test_cpu_bf16_without_hardware_support_is_refused(fixtures_dir, monkeypatch):
    from facemoe import embedder as module
    from facemoe.checkpoint import load_model

    monkeypatch.setattr(module, "native_bf16", lambda: False)
    with pytest.raises(InputError, match="bf16' on the CPU needs AVX512-BF16 or AMX"):
        FaceMoEEmbedder(load_model(fixtures_dir / "fixtureA_state.pt"), precision="bf16")


def test_cpu_bf16_packs_in_bf16_and_agrees_with_fp32(fixtures_dir, embedder, crops):
    from facemoe.checkpoint import load_model
    from facemoe.packed import native_bf16

    if not native_bf16():
        pytest.skip("this CPU has no AVX512-BF16 or AMX")
    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    bf16 = FaceMoEEmbedder(model, precision="bf16", batch_size=3)
    assert bf16.model is model
    assert model.layers[1].blocks[0].mlp.experts[0].fc1.dtype == torch.bfloat16
    units, norms = bf16.embed(crops)
    expected, expected_norms = embedder.embed(crops)
    assert units.dtype == np.float32 and (units * expected).sum(axis=1).min() > 0.999
    np.testing.assert_allclose(norms, expected_norms, rtol=0.02)
    assert bf16.embedder_id == embedder.embedder_id.replace("-fp32-", "-bf16-")


def test_auto_on_a_cpu_without_bf16_is_fp32_said_once(fixtures_dir, embedder, monkeypatch, caplog):
    from facemoe import embedder as module

    monkeypatch.setattr(module, "native_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="facemoe.embedder"):
        auto = FaceMoEEmbedder(load_model(fixtures_dir / "fixtureA_perturbed_state.pt"), precision="auto")
    assert auto.precision == "fp32" and auto.embedder_id == embedder.embedder_id
    lines = [r.getMessage() for r in caplog.records if r.name == "facemoe.embedder"]
    assert lines == [
        "FaceMoE precision auto: fp32 on cpu (this CPU has no AVX512-BF16 or AMX (or this PyTorch no oneDNN): "
        "bf16 would be emulated)"
    ]


def test_auto_on_a_bf16_cpu_is_bf16_and_an_explicit_precision_wins(fixtures_dir, embedder, caplog):
    from facemoe.packed import native_bf16

    if not native_bf16():
        pytest.skip("this CPU has no AVX512-BF16 or AMX")
    path = fixtures_dir / "fixtureA_perturbed_state.pt"
    with caplog.at_level(logging.INFO, logger="facemoe.embedder"):
        auto = FaceMoEEmbedder(load_model(path), precision="auto")
    assert auto.precision == "bf16" and auto.embedder_id == embedder.embedder_id.replace("-fp32-", "-bf16-")
    assert "auto: bf16 on cpu (this CPU multiplies bf16 in hardware" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="facemoe.embedder"):
        explicit = FaceMoEEmbedder(load_model(path), precision="fp32")
    assert explicit.precision == "fp32" and "auto" not in caplog.text


@pytest.mark.parametrize("bf16,expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, bf16, expected):
    import contextlib

    from facemoe.embedder import auto_precision

    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a: bf16)
    precision, reason = auto_precision("cuda:0")
    assert precision == expected and reason.startswith("Test GPU")
    assert auto_precision("mps")[0] == "fp32"


def test_int8_keeps_the_named_layers_in_fp32(fixtures_dir, embedder, crops):
    from facemoe.quantize import Int8Linear

    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    int8 = FaceMoEEmbedder(model, precision="int8", int8_fp32_layers=["layers.1.blocks.0.mlp"])
    assert type(model.layers[1].blocks[0].mlp.experts[0].fc1) is torch.nn.Linear
    assert isinstance(model.layers[1].blocks[0].attn.qkv, Int8Linear)
    assert int8.embedder_id == embedder.embedder_id.replace("-fp32-", "-int8-")
    with pytest.raises(InputError, match="'layers.9' names no quantisable layer"):
        FaceMoEEmbedder(
            load_model(fixtures_dir / "fixtureA_state.pt"), precision="int8", int8_fp32_layers=["layers.9"]
        )
    with pytest.raises(InputError, match="int8_fp32_layers applies to precision int8"):
        FaceMoEEmbedder(load_model(fixtures_dir / "fixtureA_state.pt"), int8_fp32_layers=["layers.1"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16"])
def test_cuda_half_precisions_agree_with_fp32(fixtures_dir, embedder, crops, precision):
    model = load_model(fixtures_dir / "fixtureA_perturbed_state.pt")
    gpu = FaceMoEEmbedder(model, device="cuda", precision=precision, batch_size=3)
    assert gpu.precision in ("bf16", "fp16") and gpu.model.eval_chunk_tokens == 0
    units, norms = gpu.embed(crops)
    expected, expected_norms = embedder.embed(crops)
    assert units.dtype == np.float32 and (units * expected).sum(axis=1).min() > 0.995
    np.testing.assert_allclose(norms, expected_norms, rtol=0.05)
    assert gpu.embedder_id == embedder.embedder_id.replace("-fp32-", f"-{gpu.precision}-")
