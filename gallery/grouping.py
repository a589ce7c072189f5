"""Grouping of unit templates into persons: average linkage over a nearest-neighbour graph, with cannot-links.

The method of ``query unknowns`` (:mod:`gallery.unknowns`; docs/unknowns.md), on vectors only:

1. Candidate pairs. Each template's ``neighbours`` most similar templates by cosine: an exact search (FAISS flat
   inner product, matrix products in blocks) up to ``exact_up_to`` templates; above it an inverted file (FAISS
   IVF-Flat: spherical k-means cells of about ``cell_size`` templates, ``probe`` cells searched per template),
   which can miss a neighbour but keeps 100,000 templates within a minute on two cores. Pairs below the
   threshold are dropped.
2. Joining. Pairs are taken in descending similarity (single-linkage order); a pair joins its two groups only
   when both hold:

   - average linkage: the mean cosine over every pair of templates across the two groups is at least the
     threshold. For unit templates it is exact and cheap, ``(sum_A . sum_B) / (|A| |B|)``, from each group's
     template sum; a chain A-B-C where A and C differ does not join, as it would in connected components;
   - no overlap: no track of one group shares an instant (``max(starts) <= min(ends)``, stream seconds) with a
     track of the other in the same run: two faces on screen at once are two people.

   A pair refused while its groups were small is tried again once they have grown (at most ``PASSES`` rounds).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter

import faiss
import numpy as np

from gallery.config import UnknownsConfig

logger = logging.getLogger(__name__)

__all__ = ["PASSES", "group_templates", "mean_similarity", "score_grouping"]

BATCH = 10_000  # templates searched per call
PASSES = 3  # rounds over the refused pairs
TRAIN_PER_CELL = 32  # k-means training points per inverted-file cell
RESCORE = 2_000  # candidates of this many templates scored exactly at a time
SEED = 0


def _neighbours(x: np.ndarray, config: UnknownsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``neighbours`` most similar rows (itself among them): exact cosines and indices ``[N, k]``, -1
    for none; an exact search up to ``exact_up_to`` rows, an inverted file above (8-bit codes: a quarter of the
    memory to scan; the candidates it finds are scored exactly)."""
    n, dim = x.shape
    k = min(config.neighbours + 1, n)
    if n <= config.exact_up_to:
        index = faiss.IndexFlatIP(dim)
    else:
        cells = max(1, n // config.cell_size)
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim),
            dim,
            cells,
            faiss.ScalarQuantizer.QT_8bit,
            faiss.METRIC_INNER_PRODUCT,
            False,
        )
        index.cp.spherical = True
        index.cp.seed = SEED
        index.cp.min_points_per_centroid = 1
        index.cp.max_points_per_centroid = TRAIN_PER_CELL
        sample = np.random.default_rng(SEED).choice(n, min(n, cells * TRAIN_PER_CELL), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = min(config.probe, cells)
        logger.info("unknowns: inverted file of %d cells, %d searched per track", cells, index.nprobe)
    index.add(x)
    scores, ids = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    for s in range(0, n, BATCH):
        scores[s : s + BATCH], ids[s : s + BATCH] = index.search(x[s : s + BATCH], k)
    if n > config.exact_up_to:
        for s in range(0, n, RESCORE):
            found = ids[s : s + RESCORE]
            exact = np.einsum("nd,nkd->nk", x[s : s + RESCORE], x[np.maximum(found, 0)])
            scores[s : s + RESCORE] = np.where(found >= 0, exact, -np.inf)
    return scores, ids


def _pairs(scores: np.ndarray, ids: np.ndarray, threshold: float) -> tuple[list[int], list[int]]:
    """Candidate pairs ``i < j`` at or above ``threshold``, once each, most similar first (ties by index)."""
    n, k = ids.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols, sims = ids.reshape(-1), scores.reshape(-1)
    keep = (cols >= 0) & (cols != rows) & (sims >= threshold)
    a, b = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep]
    _, first = np.unique(a * n + b, return_index=True)
    a, b, sims = a[first], b[first], sims[keep][first]
    order = np.lexsort((b, a, -sims))
    return a[order].tolist(), b[order].tolist()


class _Groups:
    """Union-find over tracks keeping, per group, its template sum and its tracks' time spans per run."""

    def __init__(self, x: np.ndarray, runs: list[int], starts: list[float], ends: list[float]) -> None:
        self.x, self.runs, self.starts, self.ends = x, runs, starts, ends
        self.parent = list(range(len(runs)))
        self.size = [1] * len(runs)
        self.sums: dict[int, np.ndarray] = {}
        self.spans: dict[int, dict[int, tuple[list[float], list[float]]]] = {}

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def sum(self, root: int) -> np.ndarray:
        found = self.sums.get(root)
        return self.x[root].astype(np.float64) if found is None else found

    def _spans(self, root: int) -> dict[int, tuple[list[float], list[float]]]:
        found = self.spans.get(root)
        return {self.runs[root]: ([self.starts[root]], [self.ends[root]])} if found is None else found

    def linkage(self, a: int, b: int) -> float:
        """Mean cosine over every pair of tracks across groups ``a`` and ``b`` (roots)."""
        return float(self.sum(a) @ self.sum(b)) / (self.size[a] * self.size[b])

    def overlap(self, a: int, b: int) -> bool:
        """Whether a track of ``a`` and one of ``b`` share an instant of the same run. Within a group the spans of
        a run never overlap, so sorted by start they are sorted by end too: one bisection per span."""
        small, large = sorted((self._spans(a), self._spans(b)), key=len)
        for run, (starts, ends) in small.items():
            other = large.get(run)
            if other is None:
                continue
            for start, end in zip(starts, ends):
                pos = bisect_right(other[0], end)  # spans of ``other`` starting at or before ``end``
                if pos and other[1][pos - 1] >= start:
                    return True
        return False

    def join(self, a: int, b: int) -> None:
        if self.size[a] < self.size[b]:
            a, b = b, a
        spans, extra = self._spans(a), self._spans(b)
        for run, (starts, ends) in extra.items():
            mine = spans.setdefault(run, ([], []))
            for start, end in zip(starts, ends):
                pos = bisect_right(mine[0], start)
                mine[0].insert(pos, start)
                mine[1].insert(pos, end)
        self.sums[a] = self.sum(a) + self.sum(b)
        self.spans[a] = spans
        self.sums.pop(b, None)
        self.spans.pop(b, None)
        self.parent[b] = a
        self.size[a] += self.size[b]


def group_templates(
    x: np.ndarray,
    runs: list[int],
    starts: list[float],
    ends: list[float],
    threshold: float,
    config: UnknownsConfig | None = None,
) -> np.ndarray:
    """Group unit templates ``x [N, D]`` of tracks (their runs and stream spans) by the method of this module:
    a group label ``[N]`` per track, labels numbered by first track."""
    config = config or UnknownsConfig()
    n = len(x)
    if not len(runs) == len(starts) == len(ends) == n:
        raise ValueError(f"expected {n} runs, starts and ends, got {len(runs)}, {len(starts)}, {len(ends)}")
    if n == 0:
        return np.zeros(0, np.int64)
    groups = _Groups(x, list(runs), list(starts), list(ends))
    pending = list(zip(*_pairs(*_neighbours(x, config), threshold)))
    for _ in range(PASSES):
        refused, joined = [], 0
        for i, j in pending:
            a, b = groups.find(i), groups.find(j)
            if a == b:
                continue
            if groups.linkage(a, b) < threshold or groups.overlap(a, b):
                refused.append((i, j))
                continue
            groups.join(a, b)
            joined += 1
        logger.debug("unknowns: %d pairs joined, %d refused", joined, len(refused))
        if not joined or not refused:
            break
        pending = refused
    roots = [groups.find(i) for i in range(n)]
    _, labels = np.unique(np.asarray(roots), return_inverse=True)
    first = {}
    return np.asarray([first.setdefault(label, len(first)) for label in labels.tolist()], np.int64)


def mean_similarity(x: np.ndarray) -> float | None:
    """Mean cosine over the pairs of unit rows of ``x``: ``(|sum|^2 - n) / (n (n - 1))``."""
    n = len(x)
    if n < 2:
        return None
    total = x.astype(np.float64).sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))


def score_grouping(assigned, truth) -> dict[str, float]:
    """How a grouping (``assigned`` group per track) agrees with true labels (``truth`` per track), every track
    counted: ``purity`` (share of tracks in the majority label of their group), ``completeness`` (share of
    tracks in the largest group of their label) and pairwise ``precision``/``recall``/``f1`` over the pairs of
    tracks put together (1.0 when there are no such pairs)."""
    pairs = Counter(zip(list(assigned), list(truth)))
    if not pairs:
        return {"purity": 1.0, "completeness": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    by_group: dict = {}
    by_label: dict = {}
    for (group, label), count in pairs.items():
        by_group.setdefault(group, []).append(count)
        by_label.setdefault(label, []).append(count)
    n = sum(pairs.values())

    def together(counts) -> int:
        return sum(c * (c - 1) // 2 for c in counts)

    both = together(pairs.values())
    grouped = together(sum(c) for c in by_group.values())
    same = together(sum(c) for c in by_label.values())
    precision = both / grouped if grouped else 1.0
    recall = both / same if same else 1.0
    return {
        "purity": sum(max(c) for c in by_group.values()) / n,
        "completeness": sum(max(c) for c in by_label.values()) / n,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
