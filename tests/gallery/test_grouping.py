"""Grouping unit templates into persons: average linkage over the neighbour graph, never two faces at once."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from gallery.config import UnknownsConfig
from gallery.grouping import group_templates, mean_similarity, score_grouping
from tests.gallery.helpers import unit


def _unit(rows) -> np.ndarray:
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _group(x, runs=None, spans=None, threshold=0.5, **config):
    n = len(x)
    runs = [1] * n if runs is None else runs
    spans = [(10.0 * i, 10.0 * i + 1) for i in range(n)] if spans is None else spans  # disjoint by default
    labels = group_templates(
        x, runs, [s for s, _ in spans], [e for _, e in spans], threshold, UnknownsConfig(**config)
    )
    return labels.tolist()


def _people(rng, sizes: list[int], dim: int, quality=(0.5, 0.9)) -> tuple[np.ndarray, list[int]]:
    """``len(sizes)`` people with random centres, ``sizes[i]`` noisy unit templates each (cosine to the centre
    drawn in ``quality``), in random order: (templates, true person per template)."""
    centres = unit(rng, len(sizes), dim)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(truth)
    q = rng.uniform(*quality, size=(len(truth), 1)).astype(np.float32)
    noise = unit(rng, len(truth), dim)
    noise -= (noise * centres[truth]).sum(axis=1, keepdims=True) * centres[truth]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return _unit(q * centres[truth] + np.sqrt(1 - q**2) * noise), truth.tolist()


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([], []),
        ([[1, 0, 0]], [0]),
        ([[1, 0, 0], [0, 1, 0]], [0, 1]),  # far apart
        ([[1, 0, 0], [0.9, 0.1, 0]], [0, 0]),  # close
        ([[1, 0, 0], [0, 1, 0], [0.99, 0.05, 0], [0.05, 0.99, 0], [0, 0, 1]], [0, 1, 0, 1, 2]),  # many
    ],
    ids=["none", "one", "far", "close", "many"],
)
def test_groups(rows, expected):
    x = _unit(rows) if rows else np.zeros((0, 3), np.float32)
    assert _group(x) == expected


def test_a_chain_does_not_join_end_to_end():
    # A-B and B-C are at 0.71, above the threshold; A-C is 0: connected components would make one group
    x = _unit([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    assert float(x[0] @ x[1]) > 0.5 and float(x[1] @ x[2]) > 0.5 and abs(float(x[0] @ x[2])) < 1e-6
    assert _group(x, threshold=0.5) == [0, 0, 1]  # C against {A, B}: (0 + 0.71) / 2 < 0.5
    assert _group(x, threshold=0.3) == [0, 0, 0]  # ... but above a lower threshold


@pytest.mark.parametrize(
    "runs, spans, expected",
    [
        ([1, 1], [(0.0, 5.0), (4.0, 9.0)], [0, 1]),  # on screen together: two people
        ([1, 1], [(0.0, 5.0), (5.0, 9.0)], [0, 1]),  # one shared instant is enough
        ([1, 1], [(2.0, 2.0), (2.0, 2.0)], [0, 1]),  # two one-frame tracks of the same frame
        ([1, 1], [(0.0, 5.0), (5.5, 9.0)], [0, 0]),  # one after the other: the same person may come back
        ([1, 2], [(0.0, 5.0), (0.0, 5.0)], [0, 0]),  # same stream times in two runs (a file processed twice)
    ],
    ids=["overlap", "touch", "same-frame", "after", "other-run"],
)
def test_tracks_on_screen_together_never_join(runs, spans, expected):
    x = _unit([[1, 0, 0], [0.95, 0.05, 0]])
    assert _group(x, runs, spans) == expected


def test_overlap_with_any_member_keeps_a_track_out():
    # A (0-5 s) and B (10-15 s) are one person; C (12-13 s) overlaps B only, and is as close to both
    x = _unit([[1, 0, 0], [0.98, 0.02, 0], [0.99, 0.01, 0]])
    spans = [(0.0, 5.0), (10.0, 15.0), (12.0, 13.0)]
    assert _group(x, [1, 1, 1], spans) in ([0, 0, 1], [0, 1, 0])
    assert _group(x, [1, 1, 2], spans) == [0, 0, 0]  # C in another run


@pytest.mark.parametrize("threshold", [0.3, 0.4])
def test_many_people_like_textbook_average_linkage(threshold):
    # 150 people, 1-11 tracks each, cosine to their centre 0.5-0.9: same-person pairs score 0.25-0.81
    rng = np.random.default_rng(3)
    x, truth = _people(rng, [int(s) for s in rng.integers(1, 12, size=150)], 64)
    ours = _group(x, threshold=threshold)
    upgma = fcluster(linkage(pdist(x, "cosine"), "average"), 1 - threshold, "distance").tolist()
    assert score_grouping(ours, upgma)["f1"] >= 0.95  # all pairs, exact merging order: close to our result
    mine, theirs = score_grouping(ours, truth), score_grouping(upgma, truth)
    assert mine["purity"] >= 0.99 and mine["f1"] >= theirs["f1"] - 0.01, (mine, theirs)
    approx = _group(x, threshold=threshold, exact_up_to=0, cell_size=20, probe=8)  # the path for large logs
    assert score_grouping(approx, ours)["f1"] >= 0.95
    assert max(_group(x, threshold=threshold, neighbours=1)) < len(x) - 1  # one neighbour each still groups


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="expected 2 runs"):
        group_templates(_unit([[1, 0], [0, 1]]), [1], [0.0, 1.0], [0.5, 1.5], 0.5)


@pytest.mark.parametrize(
    "rows, expected",
    [([], None), ([[1, 0]], None), ([[1, 0], [0, 1]], 0.0), ([[1, 0], [1, 0], [0, 1]], 1 / 3)],
    ids=["none", "one", "two", "three"],
)
def test_mean_similarity(rows, expected):
    x = _unit(rows) if rows else np.zeros((0, 2), np.float32)
    got = mean_similarity(x)
    assert got == expected if expected is None else got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "assigned, truth, expected",
    [
        ([], [], dict(purity=1.0, completeness=1.0, precision=1.0, recall=1.0, f1=1.0)),
        ([0], ["a"], dict(purity=1.0, completeness=1.0, precision=1.0, recall=1.0, f1=1.0)),
        ([0, 0, 1], ["a", "a", "a"], dict(purity=1.0, completeness=2 / 3, precision=1.0, recall=1 / 3)),
        ([0, 0, 0, 1], ["a", "a", "b", "b"], dict(purity=3 / 4, completeness=3 / 4, precision=1 / 3)),
    ],
    ids=["empty", "one", "split", "mixed"],
)
def test_score_grouping(assigned, truth, expected):
    scores = score_grouping(assigned, truth)
    assert {k: scores[k] for k in expected} == pytest.approx(expected)
