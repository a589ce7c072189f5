"""timm registration: pretrained cfgs derived from the release table, weights through the one checkpoint filter,
strict loading with a readable diff, and the one-line error offline."""

from __future__ import annotations

import pytest
import timm
import torch

from facemoe import registry
from facemoe.checkpoint import RELEASES, file_tag, load_model
from facemoe.errors import CheckpointError

SMALL = dict(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 4), drop_path_rate=0.0)


def test_one_pretrained_cfg_per_release_derived_from_the_release_table():
    tags = timm.list_pretrained("facemoe_swin_e3k2.*")
    assert tags == [f"facemoe_swin_e3k2.{tag}" for tag in RELEASES]
    for tag, release in RELEASES.items():
        cfg = timm.models.get_pretrained_cfg(f"{release.architecture}.{tag}")
        assert (cfg.hf_hub_id, cfg.hf_hub_filename) == (release.hub_id, release.filename)
        assert cfg.hf_hub_id == "kartiknarayan/FaceMoE"
        assert cfg.input_size == (3, 120, 120) and cfg.mean == cfg.std == (0.5, 0.5, 0.5)
        assert cfg.interpolation == "bicubic" and cfg.num_classes == 0
    assert timm.models.get_pretrained_cfg("facemoe_swin_e3k2").tag == "briar"  # the default weights
    assert not timm.models.get_pretrained_cfg("facemoe_swin_dense").has_weights


@pytest.mark.parametrize(
    "variant,name,fixture",
    [
        ("facemoe_swin_e3k2.tinyface", "A", "fixtureA_perturbed_state.pt"),
        ("facemoe_swin_dense", "C", "fixtureC_perturbed_state.pt"),
    ],
)
def test_pretrained_file_through_timm_equals_load_model(fixtures_dir, variant, name, fixture):
    path = fixtures_dir / fixture
    model = timm.create_model(
        variant, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL
    ).eval()
    reference = load_model(path, drop_path_rate=0.0)
    assert model.cfg == reference.cfg
    x = torch.load(fixtures_dir / f"fixture{name}_input.pt")
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference(x), atol=0, rtol=0)
    expected = torch.load(fixtures_dir / f"fixture{name}_perturbed_eval_out.pt")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert model.checkpoint_tag == reference.checkpoint_tag == file_tag(path)
    assert model.pretrained_cfg["file"] == str(path) and "state_dict" not in model.pretrained_cfg


def test_pretrained_path_uses_the_one_filter(tmp_path, fixtures_dir, monkeypatch):
    """A training container with a DDP prefix and without the derived buffers loads through timm too."""
    state = torch.load(fixtures_dir / "fixtureA_state.pt", weights_only=True)
    path = tmp_path / "checkpoint_gpu_0.pt"
    kept = {
        f"module.{k}": v for k, v in state.items() if not k.endswith(("attn_mask", "relative_position_index"))
    }
    torch.save({"state_dict_backbone": kept, "epoch": 3}, path)
    calls = []
    filter_fn = registry.checkpoint_filter_fn
    monkeypatch.setattr(
        registry, "checkpoint_filter_fn", lambda sd, model: calls.append(1) or filter_fn(sd, model)
    )
    overlay = dict(file=str(path))
    model = timm.create_model("facemoe_swin_e3k2", pretrained=True, pretrained_cfg_overlay=overlay, **SMALL)
    assert calls == [1]  # timm's pretrained_filter_fn
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_mismatch_through_timm_is_a_readable_diff(fixtures_dir):
    path = fixtures_dir / "fixtureA_state.pt"
    other = dict(SMALL, depths=(2, 4, 2), num_heads=(2, 4, 8))
    with pytest.raises(
        CheckpointError,
        match=r"fixtureA_state\.pt does not fit the model: 44 missing: "
        r"layers\.1\.blocks\.2\.norm1\.weight, .*\(\+38 more\); "
        r"2 shape mismatch: "
        r"layers\.2\.blocks\.0\.attn\.relative_position_bias_table: "
        r"expected \[81, 8\], got \[81, 4\]",
    ) as info:
        timm.create_model(
            "facemoe_swin_e3k2.tinyface",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(path)),
            **other,
        )
    assert "\n" not in str(info.value)


def _offline(monkeypatch) -> None:
    """What ``HF_HUB_OFFLINE=1`` does when set before huggingface_hub is imported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def test_offline_without_the_file_is_one_line_naming_file_and_place(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(CheckpointError) as info:
        timm.create_model("facemoe_swin_e3k2.tinyface", pretrained=True, cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot fetch kartiknarayan/FaceMoE/swin4m_exp_3_k_2_tinyface_full/model.pt")
    assert (
        "pretrained_cfg_overlay=dict(file=PATH)" in message
        and f"pre-fill the Hub cache at {tmp_path}" in message
    )


def test_offline_with_the_file_in_the_hub_cache_loads(tmp_path, monkeypatch, fixtures_dir):
    _offline(monkeypatch)
    repo = tmp_path / "models--kartiknarayan--FaceMoE"
    snapshot = repo / "snapshots" / "abc123" / "swin4m_exp_3_k_2_tinyface_full"
    snapshot.mkdir(parents=True)
    (snapshot / "model.pt").write_bytes((fixtures_dir / "fixtureA_state.pt").read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    model = timm.create_model(
        "facemoe_swin_e3k2.tinyface", pretrained=True, cache_dir=tmp_path, **SMALL
    ).eval()
    x = torch.load(fixtures_dir / "fixtureA_input.pt")
    with torch.no_grad():
        torch.testing.assert_close(
            model(x), torch.load(fixtures_dir / "fixtureA_eval_out.pt"), atol=1e-5, rtol=0
        )


def test_dense_variant_has_no_released_weights():
    with pytest.raises(CheckpointError, match="no released weights exist for facemoe_swin_dense"):
        timm.create_model("facemoe_swin_dense", pretrained=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_classes=10), "num_classes=0"),
        (dict(img_size=(120, 96)), "square"),
    ],
)
def test_timm_arguments_that_do_not_fit_an_embedder(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model("facemoe_swin_dense", **SMALL, **kwargs)
