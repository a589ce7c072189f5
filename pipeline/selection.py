"""Quality-gated crop selection: which crops of a track are worth embedding.

Usable crops wait in a pool holding the track's ``best_k`` best; when the track ends, the pooled crops that rank
among the track's ``best_k`` best overall are embedded. So a track costs at most ``best_k`` embeddings, never one
per detection, and a crop is embedded only when it ends up in the track's template.

``early`` is for runs whose open tracks are watched (watch-list alerts fire while a track is still open), whose
tracking side may die with its open tracks (Ray camera actors), or that ask for it (``runner.embed_early``): once a
track is confirmed, its first usable crop is then embedded at once (the track has a template right away), and so
is every later crop whose quality beats the best embedded so far by ``improve_margin``; such a track costs at most
``best_k`` embeddings plus its improvements. With ``embed_all`` every usable crop is embedded (the baseline the
bench compares to).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from core.types import FaceCrop

from .config import RunnerConfig

__all__ = ["CropSelector", "TrackSelection"]


@dataclass
class TrackSelection:
    """Selection state of one track."""

    frames: int = 0
    embedded_scores: list[float] = field(default_factory=list)
    pool: list[tuple[float, int, FaceCrop]] = field(default_factory=list)  # min-heap on score
    best: FaceCrop | None = None
    best_score: float = -1.0

    @property
    def best_embedded(self) -> float:
        return max(self.embedded_scores, default=-1.0)


class CropSelector:
    """Decides per crop: embed now, keep in the track's pool, or drop (``early``: see the module docstring)."""

    def __init__(self, cfg: RunnerConfig, early: bool = False) -> None:
        self.cfg = cfg
        self.early = early
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[int, TrackSelection] = {}
        self._order = itertools.count()

    def offer(self, crop: FaceCrop, score: float, usable: bool, confirmed: bool) -> bool:
        """Record a crop of ``crop.track_id``; True when it should be embedded now."""
        state = self._tracks.setdefault(crop.track_id, TrackSelection())
        state.frames += 1
        if score > state.best_score:
            state.best, state.best_score = crop, score
        if not usable:
            return False
        cfg = self.cfg
        if confirmed and (
            cfg.embed_all
            or self.early
            and (not state.embedded_scores or score > state.best_embedded * (1 + cfg.improve_margin))
        ):
            state.embedded_scores.append(score)
            return True
        entry = (score, next(self._order), crop)
        if cfg.embed_all or len(state.pool) < cfg.best_k:  # embed_all: only tentative crops wait here
            heapq.heappush(state.pool, entry)
        elif score > state.pool[0][0]:
            heapq.heapreplace(state.pool, entry)
        return False

    def finish(self, track_id: int, confirmed: bool) -> tuple[TrackSelection, list[tuple[FaceCrop, float]]]:
        """End a track: its state and the pooled crops still to embed (none for unconfirmed tracks)."""
        state = self._tracks.pop(track_id, TrackSelection())
        if not confirmed:
            return state, []
        if self.cfg.embed_all:
            return state, [(crop, score) for score, _, crop in state.pool]
        ranked = sorted(
            [(s, True, None) for s in state.embedded_scores]
            + [(s, False, crop) for s, _, crop in state.pool],
            key=lambda r: -r[0],
        )
        picked = [(crop, s) for s, done, crop in ranked[: self.cfg.best_k] if not done]
        return state, picked
