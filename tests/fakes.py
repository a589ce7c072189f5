"""Test doubles shared by the suite: a fixed in-memory gallery index for the matcher."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.types import Candidate


class FixedIndex:
    """Unit templates ``[K, D]`` with their names, searched by brute-force cosine (what ``stages.match.Matcher``
    needs of a gallery: ``threshold`` and ``search``)."""

    def __init__(self, names: Sequence[str], templates: np.ndarray, threshold: float) -> None:
        self.names = list(names)
        self.templates = np.asarray(templates, np.float32)
        self.threshold = float(threshold)

    def __len__(self) -> int:
        return len(self.names)

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Candidate]]:
        embeddings = np.asarray(embeddings, np.float32)
        if not self.names:
            return [[] for _ in embeddings]
        scores = embeddings @ self.templates.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [
            [Candidate(int(j), self.names[j], float(scores[i, j])) for j in row] for i, row in enumerate(top)
        ]
