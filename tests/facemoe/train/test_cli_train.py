"""The ``train`` command: YAML + --set, one-line errors with exit code 2, and DDP under torchrun (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

import run_pipeline
from tests.conftest import ROOT
from tests.facemoe.train.conftest import train_config


def _write(tmp_path, tree) -> str:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_train_command_runs_with_overrides(identity_folder, tmp_path, capsys):
    cfg = _write(tmp_path, train_config(identity_folder, tmp_path / "out"))
    assert run_pipeline.main(["train", "--config", cfg, "--set", "run.max_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "step 2/4" in out and "model.pt" in out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t["run"].update(bach_size=4), "unknown config key run.bach_size"),
        (lambda t: t["head"].update(margin=2.0), "head.margin: Input should be less than or equal to 1"),
        (
            lambda t: t["data"].update(path="/nonexistent/faces"),
            "dataset folder not found: /nonexistent/faces",
        ),
    ],
)
def test_bad_config_is_one_line_exit_2(identity_folder, tmp_path, capsys, change, message):
    tree = train_config(identity_folder, tmp_path / "out")
    change(tree)
    assert run_pipeline.main(["train", "--config", _write(tmp_path, tree)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out" / "last.pt").exists()


def test_bad_override_and_missing_file(tmp_path, capsys):
    assert run_pipeline.main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("run: [unclosed\n")
    assert run_pipeline.main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_processes_gloo(identity_folder, tmp_path):
    """torchrun, 2 CPU processes with gloo: the run completes and its checkpoint holds both ranks' RNG states."""
    tree = train_config(identity_folder, tmp_path / "ddp", max_steps=2, batch_size=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "run_pipeline.py"),
        "train",
        "--config",
        _write(tmp_path, tree),
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["run"]["world"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["cpu"], state["rng"][1]["cpu"])  # per-process RNG streams


def test_bad_image_found_by_a_loader_worker_is_one_line(tmp_path, capsys):
    """A RecordIO set is not checked up front: a wrong-size image surfaces from a worker process."""
    import cv2
    import numpy as np

    from facemoe.train.recordio import write_image_records

    good = cv2.imencode(".png", np.zeros((112, 112, 3), np.uint8))[1].tobytes()
    bad = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    write_image_records(tmp_path / "t.rec", [(i % 2, bad if i == 5 else good) for i in range(8)])
    tree = train_config(tmp_path / "t.rec", tmp_path / "out", batch_size=4, epochs=2)
    tree["data"]["num_workers"] = 1
    assert run_pipeline.main(["train", "--config", _write(tmp_path, tree)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "t.rec record 6: expected an aligned 112x112 crop, got 64x64" in err
