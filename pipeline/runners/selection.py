"""Quality-gated crop selection: which crops of a track are worth embedding.

Usable crops wait in a pool holding the track's ``best_k`` best; when the track ends, the pooled crops that rank
among the track's ``best_k`` best overall are handed on, best first. So a track costs at most ``best_k``
embeddings, never one per detection, and a crop is embedded only when it ends up in the track's template (the
embedding side may stop before the last of them, :mod:`pipeline.runners.decisive`).

``early`` is for runs whose open tracks are watched (watch-list alerts fire while a track is still open), whose
tracking side may die with its open tracks (Ray camera actors), or that ask for it (``runner.embed_early``): once a
track is confirmed, its first usable crop is then embedded at once (the track has a template right away), and so
is every later crop whose quality beats the best embedded so far by ``improve_margin``; such a track costs at most
``best_k`` embeddings plus its improvements. With ``embed_all`` every usable crop is embedded (the baseline the
bench compares to).

Each track also keeps the box it had on every frame (source time and x1, y1, x2, y2 in source pixels) and the
context of its best crop: a reference to that full frame while the track is open (frames are never written to
once decoded), downscaled to at most ``SCENE_MAX_WIDTH`` px wide once, when the track ends (tracks ending one after
another whose best crop is in the same frame share one downscaled copy).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

from core.types import SCENE_MAX_WIDTH, FaceCrop, SceneSnapshot
from pipeline.config import RunnerConfig

__all__ = ["CropSelector", "TrackSelection", "downscale"]


def downscale(image: np.ndarray, max_width: int = SCENE_MAX_WIDTH) -> tuple[np.ndarray, float]:
    """A copy of BGR ``image`` at most ``max_width`` px wide (aspect kept) and its scale (new px per old px)."""
    width = image.shape[1]
    if width <= max_width:
        return image.copy(), 1.0
    scale = max_width / width
    size = (max_width, max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


@dataclass
class TrackSelection:
    """Selection state of one track."""

    frames: int = 0
    embedded_scores: list[float] = field(default_factory=list)
    pool: list[tuple[float, int, FaceCrop]] = field(default_factory=list)  # min-heap on score
    best: FaceCrop | None = None
    best_score: float = -1.0
    boxes: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # (t, x1, y1, x2, y2)
    best_frame: tuple[np.ndarray, np.ndarray] | None = None  # the full frame of ``best`` and its box ``[4]``
    scene: SceneSnapshot | None = None  # ``best_frame`` downscaled, set when the track ends

    @property
    def best_embedded(self) -> float:
        return max(self.embedded_scores, default=-1.0)

    def box_rows(self) -> np.ndarray | None:
        """The track's box on every frame offered with one: float32 ``[K, 5]`` (t, x1, y1, x2, y2); None: none."""
        return np.asarray(self.boxes, np.float32).reshape(-1, 5) if self.boxes else None


class CropSelector:
    """Decides per crop: embed now, keep in the track's pool, or drop (``early``: see the module docstring)."""

    def __init__(self, cfg: RunnerConfig, early: bool = False) -> None:
        self.cfg = cfg
        self.early = early
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[int, TrackSelection] = {}
        self._order = itertools.count()
        self._frame: tuple[np.ndarray, np.ndarray, float] | None = None  # (image, downscaled, scale)

    def offer(
        self,
        crop: FaceCrop,
        score: float,
        usable: bool,
        confirmed: bool,
        box: np.ndarray | None = None,
        image: np.ndarray | None = None,
    ) -> bool:
        """Record a crop of ``crop.track_id``; True when it should be embedded now. ``box``: the face's ``[4]``
        x1, y1, x2, y2 in the pixels of ``image``, the full frame (BGR ``[H, W, 3]``) the crop was cut from; with
        both, the track keeps its box and the downscaled frame of its best crop."""
        state = self._tracks.setdefault(crop.track_id, TrackSelection())
        state.frames += 1
        if box is not None:
            state.boxes.append((float(crop.timestamp), *(float(v) for v in box[:4])))
        if score > state.best_score:
            state.best, state.best_score = crop, score
            if box is not None and image is not None:
                state.best_frame = (image, np.array(box[:4], np.float32))
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

    def _scene(self, state: TrackSelection) -> SceneSnapshot | None:
        """The downscaled full frame of the track's best crop (None: no frame was offered with it); a frame
        downscaled for the previous track ending is reused."""
        if state.best_frame is None or state.best is None:
            return None
        image, box = state.best_frame
        if self._frame is None or self._frame[0] is not image:
            self._frame = (image, *downscale(image))
        _, small, scale = self._frame
        return SceneSnapshot(small, box * np.float32(scale), float(state.best.timestamp), scale)

    def finish(self, track_id: int, confirmed: bool) -> tuple[TrackSelection, list[tuple[FaceCrop, float]]]:
        """End a track: its state and the pooled crops still to embed, best first (any order with
        ``embed_all``; none for unconfirmed tracks)."""
        state = self._tracks.pop(track_id, TrackSelection())
        state.scene, state.best_frame = self._scene(state), None
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
