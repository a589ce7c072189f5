"""Expert-load statistics: every token's k choices are counted, per block and per face size."""

from __future__ import annotations

import numpy as np
import torch

from facemoe.model import create_facemoe
from facemoe.train.experts import ExpertLoad


def test_counts_per_block_and_face_size():
    torch.manual_seed(0)
    model = create_facemoe(
        embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], num_experts=3, k=2, drop_path_rate=0.0
    ).eval()
    load = ExpertLoad(model, bins=(32, 64))
    load.set_batch([20.0, 100.0, 100.0])
    with torch.no_grad():
        _, aux = model.forward_with_aux(torch.rand(3, 3, 120, 120) * 2 - 1)
    z, bal = load.take_losses()
    assert abs(z + bal - float(aux)) < 1e-5  # the parts add up to the model's aux loss
    assert load.labels == ["0-32px", "32-64px", ">=64px"]
    stats = load.summary()
    assert len(stats) == 6
    first = load.counts["layers.0.blocks.0.mlp"]
    assert first.sum() == 3 * 400 * 2  # images x tokens x k
    assert first[0].sum() == 400 * 2 and first[1].sum() == 0 and first[2].sum() == 2 * 400 * 2
    assert load.counts["layers.2.blocks.0.mlp"].sum() == 3 * 25 * 2
    s = stats["layers.0.blocks.0.mlp"]
    assert abs(sum(s["fraction"]) - 1) < 1e-6 and set(s["by_face_size"]) == {"0-32px", ">=64px"}
    load.reset()
    assert first.sum() == 0 and load.totals["layers.0.blocks.0.mlp"].sum() == 2400
    load.close()
    model(torch.rand(2, 3, 120, 120))
    assert np.all(load.counts["layers.0.blocks.0.mlp"] == 0)  # hooks removed
