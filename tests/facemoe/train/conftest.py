"""A tiny generated identity set: each identity is a smooth random face-sized pattern plus pixel noise."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facemoe.train.recordio import write_image_records

IDENTITIES = 4
PER_IDENTITY = 8
SMALL_ARCH = {"embed_dim": 32, "depths": [2, 2, 2], "num_heads": [2, 4, 4], "num_experts": 3}


def make_identity_folder(
    root: Path, identities: int = IDENTITIES, per_identity: int = PER_IDENTITY, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(identities):
        base = cv2.resize(
            rng.integers(0, 255, (14, 14, 3)).astype(np.uint8), (112, 112), interpolation=cv2.INTER_CUBIC
        ).astype(np.float64)
        (root / f"person_{c}").mkdir(parents=True)
        for i in range(per_identity):
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / f"person_{c}" / f"{i}.png"), img)
    return root


@pytest.fixture(scope="session")
def identity_folder(tmp_path_factory) -> Path:
    return make_identity_folder(tmp_path_factory.mktemp("ids") / "train")


@pytest.fixture(scope="session")
def record_file(identity_folder, tmp_path_factory) -> Path:
    samples = []
    for label, person in enumerate(sorted(identity_folder.iterdir())):
        for img in sorted(person.iterdir()):
            _, buf = cv2.imencode(".png", cv2.imread(str(img)))
            samples.append((label * 10, buf.tobytes()))  # labels need not be contiguous
    path = tmp_path_factory.mktemp("rec") / "train.rec"
    write_image_records(path, samples)
    return path


def train_config(data: Path, out: Path, **run) -> dict:
    """A small, fast configuration as a plain dict (sections overridable by the caller)."""
    return {
        "data": {"path": str(data), "num_workers": 0},
        "model": {"arch": SMALL_ARCH, "drop_path_rate": 0.1, "k": 2},
        "head": {"sample_rate": 0.5},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "run": {
            "out_dir": str(out),
            "batch_size": 8,
            "epochs": 1,
            "log_every": 2,
            "save_every": 2,
            "progress": False,
            **run,
        },
    }


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests share a small machine: one intra-op thread avoids oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
