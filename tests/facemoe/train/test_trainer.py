"""Fine-tuning a small FaceMoE on the tiny generated sets: loss falls, exact resume, official-format output."""

from __future__ import annotations

import json
import math

import pytest
import torch

from facemoe.checkpoint import load_model
from facemoe.train.config import TrainConfig
from facemoe.train.errors import DatasetError, TrainError
from facemoe.train.module import poly_warmup
from facemoe.train.trainer import train
from tests.conftest import FIXTURES, require
from tests.facemoe.train.conftest import train_config


def _cfg(data, out, sections=None, **run) -> TrainConfig:
    tree = train_config(data, out, **run)
    for name, values in (sections or {}).items():
        tree[name] = {**tree.get(name, {}), **values}
    return TrainConfig.model_validate(tree)


def test_poly_warmup_by_hand():
    f = poly_warmup(warmup=2, total=6, power=2.0)
    assert [f(s) for s in range(7)] == [0.5, 1.0, 1.0, 0.5625, 0.25, 0.0625, 0.0]


@pytest.mark.parametrize("source", ["identity_folder", "record_file"])
def test_loss_falls_and_model_pt_loads_back(source, request, tmp_path):
    data = request.getfixturevalue(source)
    result = train(_cfg(data, tmp_path / "run", epochs=3))
    assert result.step == result.total_steps == 12 and len(result.losses) == 12
    first, last = result.identity_losses[0], sum(result.identity_losses[-3:]) / 3
    assert last < 0.5 * first, result.identity_losses
    names = {p.name for p in result.files}
    assert names == {"last.pt", "model.pt", "expert_load.json"}
    # the saved model.pt goes back through the official-checkpoint loader, strictly, with the trained weights
    loaded = load_model(tmp_path / "run" / "model.pt", k=2)
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.items())
    stats = json.loads((tmp_path / "run" / "expert_load.json").read_text())
    assert len(stats) == 6 and abs(sum(stats["layers.1.blocks.1.mlp"]["fraction"]) - 1) < 1e-5
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_resume_gives_identical_next_step_losses(identity_folder, tmp_path):
    # drop path, head dropout and partial-FC sampling all draw from the RNG; 2 micro-batches per step
    extra = {"batch_size": 4, "grad_accum": 2, "epochs": 2, "save_every": 100}
    straight = train(_cfg(identity_folder, tmp_path / "a", **extra))
    stopped = train(_cfg(identity_folder, tmp_path / "b", max_steps=3, **extra))
    resumed = train(_cfg(identity_folder, tmp_path / "b", **extra))
    assert straight.total_steps == 8 and stopped.step == 3 and resumed.step == 8
    assert stopped.losses == straight.losses[:3]
    assert resumed.losses == straight.losses[3:]  # bit for bit
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert train(_cfg(identity_folder, tmp_path / "b", **extra)).losses == []  # nothing left to do


def test_resume_refuses_a_changed_batch(identity_folder, tmp_path):
    train(_cfg(identity_folder, tmp_path / "r", max_steps=1))
    with pytest.raises(TrainError, match="written with batch_size=8, this run has batch_size=4"):
        train(_cfg(identity_folder, tmp_path / "r", batch_size=4))


def test_head_phase_then_full_phase(identity_folder, tmp_path):
    head_run = train(_cfg(identity_folder, tmp_path / "head", phase="head", max_steps=2))
    assert head_run.step == 2
    start = torch.load(tmp_path / "head" / "last.pt", weights_only=True)
    # the head phase trains the head only: backbone weights and BatchNorm statistics are untouched
    torch.manual_seed(0)
    from facemoe.model import FaceMoE, FaceMoEConfig

    fresh = FaceMoE(FaceMoEConfig(**start["model_config"]))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in start["model"].items())
    full = train(
        _cfg(
            identity_folder,
            tmp_path / "full",
            sections={"model": {"from_run": str(tmp_path / "head" / "last.pt")}},
            max_steps=2,
        )
    )
    assert full.step == 2
    after = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert not torch.equal(
        after["model"]["layers.0.blocks.0.mlp.router.gate.weight"],
        start["model"]["layers.0.blocks.0.mlp.router.gate.weight"],
    )


def test_official_checkpoint_start(identity_folder, tmp_path):
    """Fine-tune from the official fixture checkpoint (plain state dict written by the authors' code)."""
    official = require(FIXTURES / "fixtureA_state.pt")
    result = train(
        _cfg(identity_folder, tmp_path / "ft", sections={"model": {"checkpoint": str(official)}}, max_steps=1)
    )
    assert result.step == 1
    before = torch.load(official, weights_only=True)
    after = load_model(tmp_path / "ft" / "model.pt", k=2).state_dict()
    assert set(after) == set(before)  # same official key set out as in
    assert not torch.equal(after["feature_layer.2.weight"], before["feature_layer.2.weight"])  # and trained


@pytest.mark.parametrize(
    "run, match",
    [
        (
            {"batch_size": 16, "grad_accum": 4},
            "expected at least batch_size x processes x grad_accum = 64 images, got 32",
        ),
        ({"amp": "fp16", "device": "cpu"}, "amp fp16 needs a CUDA device"),
    ],
)
def test_runs_that_cannot_start(identity_folder, tmp_path, run, match):
    with pytest.raises((DatasetError, TrainError), match=match):
        train(_cfg(identity_folder, tmp_path / "x", **run))


def test_bf16_autocast_on_cpu(identity_folder, tmp_path):
    result = train(_cfg(identity_folder, tmp_path / "bf16", max_steps=1, amp="bf16"))
    assert result.step == 1 and all(math.isfinite(v) for v in result.losses)
