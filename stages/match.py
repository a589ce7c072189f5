"""Open-set matching of track templates against a gallery index.

``GalleryIndex`` is what the matcher needs from a gallery (the pipeline adapts the SQL + FAISS gallery of the
``gallery`` package to it): cosine top-k search over unit templates and an operating threshold.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np

from core.types import Candidate, MatchResult, TrackTemplate

from .config import MatchConfig

__all__ = ["GalleryIndex", "Matcher"]

logger = logging.getLogger(__name__)


@runtime_checkable
class GalleryIndex(Protocol):
    threshold: float

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Candidate]]:
        """Best ``k`` candidates (highest cosine first) for each row of ``embeddings [M, D]``."""
        ...


class Matcher:
    """Open-set decision for a track template: ``match`` when the best score reaches the threshold."""

    def __init__(self, cfg: MatchConfig, index: GalleryIndex) -> None:
        self.cfg = cfg
        self.index = index

    @property
    def threshold(self) -> float:
        return self.cfg.threshold if self.cfg.threshold is not None else float(self.index.threshold)

    def match(self, template: TrackTemplate) -> MatchResult:
        if template.num_crops == 0:
            return MatchResult(template.source_id, template.track_id, (), "unknown", self.threshold)
        cands = tuple(self.index.search(template.embedding[None, :], self.cfg.top_k)[0])
        decision = "match" if cands and cands[0].score >= self.threshold else "unknown"
        return MatchResult(template.source_id, template.track_id, cands, decision, self.threshold)

    def reset(self) -> None:
        """Matching keeps no per-stream state."""
