"""Per-track fusion of crop features into one template, updated as crops arrive.

The authors' ``pre_norm_vector_add``: the sum of the raw (un-normalised) features, i.e. unit features weighted
by their norms, normalised at the end. Quality weighting on top: each crop's term is also multiplied by
``quality_score ** quality_power``. The running sum is kept, so a live track has a template at any moment and
adding crops one at a time or in a batch gives the same template.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.types import FaceCrop, TrackTemplate

from .config import AggregateConfig

__all__ = ["Aggregator", "TrackFusion"]

logger = logging.getLogger(__name__)


@dataclass
class TrackFusion:
    """Running fusion state of one track."""

    source_id: str
    track_id: int
    total: np.ndarray
    weight: float = 0.0
    crops: int = 0
    best: FaceCrop | None = None
    best_score: float = -1.0

    def template(self, first_timestamp: float, last_timestamp: float, num_frames: int) -> TrackTemplate:
        norm = float(np.linalg.norm(self.total))
        embedding = (self.total / norm if norm > 0 else self.total).astype(np.float32)
        return TrackTemplate(
            self.source_id,
            self.track_id,
            embedding,
            self.weight,
            self.crops,
            self.best,
            first_timestamp,
            last_timestamp,
            num_frames,
        )


class Aggregator:
    """Keeps one :class:`TrackFusion` per (source, track) and folds embedded crops into it."""

    def __init__(self, cfg: AggregateConfig, dim: int) -> None:
        self.cfg = cfg
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[tuple[str, int], TrackFusion] = {}

    def weight(self, norm: float, quality_score: float) -> float:
        return float(norm) * max(float(quality_score), 1e-6) ** self.cfg.quality_power

    def add(
        self,
        crops: Sequence[FaceCrop],
        features: np.ndarray,
        norms: np.ndarray,
        quality_scores: Sequence[float],
    ) -> None:
        """Fold crops (any mix of tracks) with their unit ``features [N, D]`` and ``norms [N]`` into their tracks."""
        if not (len(crops) == len(features) == len(norms) == len(quality_scores)):
            raise ValueError(
                f"add: expected equal lengths, got crops {len(crops)}, features {len(features)}, "
                f"norms {len(norms)}, scores {len(quality_scores)}"
            )
        for crop, feat, norm, score in zip(crops, features, norms, quality_scores):
            state = self.state(crop.source_id, crop.track_id)
            w = self.weight(norm, score)
            state.total += w * feat.astype(np.float64)
            state.weight += w
            state.crops += 1
            crop.quality.feature_norm = float(norm)
            if score > state.best_score:
                state.best, state.best_score = crop, float(score)

    def state(self, source_id: str, track_id: int) -> TrackFusion:
        key = (source_id, track_id)
        if key not in self._tracks:
            self._tracks[key] = TrackFusion(source_id, track_id, np.zeros(self.dim, np.float64))
        return self._tracks[key]

    def pop(self, source_id: str, track_id: int) -> TrackFusion:
        """Remove and return a finished track's state (an empty one if nothing was embedded)."""
        state = self.state(source_id, track_id)
        del self._tracks[(source_id, track_id)]
        return state
