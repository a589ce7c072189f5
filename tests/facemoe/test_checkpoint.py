"""Official-checkpoint loading: strict, inferred architecture, readable refusals, round trip, Hub offline."""

from __future__ import annotations

import pytest
import torch

from facemoe.checkpoint import infer_config, load_model, read_state_dict, resolve_checkpoint, save_checkpoint
from facemoe.errors import CheckpointError
from facemoe.model import create_facemoe


@pytest.fixture(scope="module")
def state_a(fixtures_dir):
    return torch.load(fixtures_dir / "fixtureA_state.pt", weights_only=True)


def test_infers_fixture_architecture(state_a):
    cfg = infer_config(state_a, k=2)
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size) == (32, (2, 2, 2), (2, 4, 4), 5)
    assert (cfg.use_moe, cfg.num_experts, cfg.k, cfg.img_size, cfg.patch_size) == (True, 3, 2, 120, 6)


def test_round_trip_is_loadable_by_plain_strict_load(tmp_path, fixtures_dir, state_a):
    model = load_model(fixtures_dir / "fixtureA_state.pt")
    path = save_checkpoint(model, tmp_path / "out" / "model.pt")
    saved = torch.load(path, weights_only=True)
    assert list(saved) == list(state_a)  # official key order, buffers included
    fresh = create_facemoe(embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], num_experts=3, k=2)
    fresh.load_state_dict(saved, strict=True)  # what the official eval scripts do
    for key in state_a:
        assert torch.equal(saved[key], state_a[key]), key
    assert not list(tmp_path.glob("out/*.partial"))


def test_training_container_and_ddp_prefix_are_unwrapped(tmp_path, fixtures_dir, state_a):
    path = tmp_path / "checkpoint_gpu_0.pt"
    torch.save({"state_dict_backbone": {f"module.{k}": v for k, v in state_a.items()}, "epoch": 3}, path)
    x = torch.load(fixtures_dir / "fixtureA_input.pt")
    with torch.no_grad():
        out = load_model(path)(x)
    torch.testing.assert_close(out, torch.load(fixtures_dir / "fixtureA_eval_out.pt"), atol=1e-5, rtol=0)


def test_missing_derived_buffers_are_recomputed(tmp_path, fixtures_dir, state_a):
    path = tmp_path / "no_buffers.pt"
    torch.save(
        {k: v for k, v in state_a.items() if not k.endswith(("attn_mask", "relative_position_index"))}, path
    )
    x = torch.load(fixtures_dir / "fixtureA_input.pt")
    with torch.no_grad():
        out = load_model(path)(x)
    torch.testing.assert_close(out, torch.load(fixtures_dir / "fixtureA_eval_out.pt"), atol=1e-5, rtol=0)


def _truncated(tmp_path, fixtures_dir, state_a):
    data = (fixtures_dir / "fixtureA_state.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path, "not a readable PyTorch checkpoint"


def _empty(tmp_path, fixtures_dir, state_a):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    return path, "empty file"


def _text(tmp_path, fixtures_dir, state_a):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    return path, "not a readable PyTorch checkpoint"


def _other_architecture(tmp_path, fixtures_dir, state_a):
    path = tmp_path / "resnet.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).state_dict(), path)
    return path, "not a FaceMoE checkpoint"


def _shape_mismatch(tmp_path, fixtures_dir, state_a):
    bad = dict(state_a)
    bad["layers.1.blocks.0.attn.qkv.weight"] = torch.zeros(10, 64)
    path = tmp_path / "bad_shape.pt"
    torch.save(bad, path)
    return (
        path,
        r"shape mismatch: layers\.1\.blocks\.0\.attn\.qkv\.weight: expected \[192, 64\], got \[10, 64\]",
    )


def _extra_key(tmp_path, fixtures_dir, state_a):
    bad = dict(state_a, **{"head.weight": torch.zeros(2)})
    path = tmp_path / "extra.pt"
    torch.save(bad, path)
    return path, r"1 unexpected: head\.weight"


def _missing_key(tmp_path, fixtures_dir, state_a):
    bad = {k: v for k, v in state_a.items() if k != "layers.0.blocks.1.norm2.bias"}
    path = tmp_path / "missing.pt"
    torch.save(bad, path)
    return path, r"1 missing: layers\.0\.blocks\.1\.norm2\.bias"


@pytest.mark.parametrize(
    "make", [_truncated, _empty, _text, _other_architecture, _shape_mismatch, _extra_key, _missing_key]
)
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, fixtures_dir, state_a, make):
    path, match = make(tmp_path, fixtures_dir, state_a)
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=4), "top-k=4 does not fit a checkpoint with 3 experts"),
        (dict(k=0), "top-k=0 does not fit"),
        (dict(k=2, num_experts=4), "expected a checkpoint with 4 experts, got one with 3"),
    ],
)
def test_wrong_k_or_experts_is_refused(fixtures_dir, kwargs, match):
    with pytest.raises(CheckpointError, match=match):
        load_model(fixtures_dir / "fixtureA_state.pt", **kwargs)


def test_missing_local_file_is_one_clear_line(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        resolve_checkpoint(tmp_path / "nope.pt")


def test_hub_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # as if set before the import
    with pytest.raises(
        CheckpointError,
        match=r"cannot fetch kartiknarayan/FaceMoE/swin4m_exp_3_k_2_briar_full/model\.pt"
        r".*pass the local path, or pre-fill the Hub cache at",
    ):
        resolve_checkpoint("briar", cache_dir=tmp_path)


def test_hub_cache_is_used_when_present(tmp_path, monkeypatch, fixtures_dir):
    """A file already in the Hub cache layout resolves offline (what a second run does)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # as if set before the import
    snapshot = (
        tmp_path
        / "models--kartiknarayan--FaceMoE"
        / "snapshots"
        / "abc123"
        / "swin4m_exp_3_k_2_tinyface_full"
    )
    snapshot.mkdir(parents=True)
    (snapshot / "model.pt").write_bytes((fixtures_dir / "fixtureA_state.pt").read_bytes())
    refs = tmp_path / "models--kartiknarayan--FaceMoE" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    path = resolve_checkpoint("tinyface", cache_dir=tmp_path)
    assert (
        read_state_dict(path).keys()
        == torch.load(fixtures_dir / "fixtureA_state.pt", weights_only=True).keys()
    )
