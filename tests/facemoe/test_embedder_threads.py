"""FaceMoEEmbedder.follow_threads: torch threads follow a budget block by block, in the embedding thread only."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from facemoe.embedder import FaceMoEEmbedder
from stages.cores import CoreBudget


@pytest.fixture(scope="module")
def embedder(fixtures_dir):
    return FaceMoEEmbedder.from_checkpoint(fixtures_dir / "fixtureA_perturbed_state.pt", batch_size=4)


@pytest.fixture(scope="module")
def crops():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(2)]


def _blocks(embedder):
    return [m for name, m in embedder.model.named_modules() if name.split(".")[-2:-1] == ["blocks"]]


def _seen_by_blocks(embedder, crops):
    """torch's thread count as each block starts, embedding in a new thread."""
    seen: list[int] = []
    hooks = [
        b.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
        for b in _blocks(embedder)
    ]
    try:
        worker = threading.Thread(target=embedder.embed, args=(crops,))
        worker.start()
        worker.join()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_blocks_run_with_the_threads_the_budget_grants(embedder, crops):
    budget = CoreBudget(2)
    main_threads = torch.get_num_threads()
    embedder.follow_threads(budget.embed_threads)
    try:
        with budget.detecting():
            busy = _seen_by_blocks(embedder, crops)
        idle = _seen_by_blocks(embedder, crops)
    finally:
        embedder.follow_threads(None)
    assert len(busy) == len(_blocks(embedder)) >= 2
    assert set(busy) == {1} and set(idle) == {2}
    assert torch.get_num_threads() == main_threads


def test_the_count_changes_within_a_forward_pass(embedder, crops):
    asked = []

    def threads():
        asked.append(None)
        return 1 if len(asked) <= 3 else 2

    embedder.follow_threads(threads)
    try:
        seen = _seen_by_blocks(embedder, crops)
    finally:
        embedder.follow_threads(None)
    assert seen[:2] == [1, 1] and set(seen[2:]) == {2}


def test_without_a_budget_the_count_is_left_alone(embedder, crops):
    embedder.follow_threads(lambda: 1)
    embedder.follow_threads(None)
    before = torch.get_num_threads()
    units, _ = embedder.embed(crops)
    assert torch.get_num_threads() == before and units.shape == (2, 512)
