"""ByteTrack-style multi-face tracking: a constant-velocity Kalman filter per face, two-stage IoU association
(confident detections first, then the weak ones against still-unmatched tracks), and a lost buffer in which a
track that reappears keeps its id.

A track is *tentative* until it has ``min_hits`` detections in a row, then *confirmed*. Tentative tracks die at
their first miss; confirmed tracks become *lost* and end once unseen for more than ``max_lost_s`` seconds.
Association also requires the box sizes to agree (at most 2x apart), so an id does not jump from a near face
to a far one passing through the same spot. Boxes smaller than ``small_face_px`` are compared as if grown to that
side around their centres: a few pixels of jitter or motion would otherwise take all of a tiny face's IoU; and
their detections are confident (first association, new tracks) from ``small_face_threshold``: the detector
scores tiny faces lower.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.types import Detections

from .config import TrackConfig

__all__ = ["KalmanBox", "TrackEnd", "Tracker", "grown", "iou_matrix"]

logger = logging.getLogger(__name__)

_MAX_SIZE_RATIO = 2.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a [N, 4]`` with every box of ``b [M, 4]`` (xyxy)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def grown(boxes: np.ndarray, side: float) -> np.ndarray:
    """Boxes ``[N, 4]`` (xyxy) with each side below ``side`` px grown to it around the box's centre."""
    if side <= 0 or not len(boxes):
        return boxes
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum(boxes[:, 2:] - boxes[:, :2], side) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _to_xyah(box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w / max(h, 1e-6), h], np.float64)


class KalmanBox:
    """Constant-velocity Kalman filter on (centre x, centre y, aspect, height), noise scaled by the height."""

    _POS, _VEL = 1.0 / 20, 1.0 / 160

    def __init__(self, box: np.ndarray) -> None:
        self.x = np.r_[_to_xyah(box), np.zeros(4)]
        h = self.x[3]
        std = [
            2 * self._POS * h,
            2 * self._POS * h,
            1e-2,
            2 * self._POS * h,
            10 * self._VEL * h,
            10 * self._VEL * h,
            1e-5,
            10 * self._VEL * h,
        ]
        self.P = np.diag(np.square(std))
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)

    def predict(self) -> None:
        h = self.x[3]
        q = [
            self._POS * h,
            self._POS * h,
            1e-2,
            self._POS * h,
            self._VEL * h,
            self._VEL * h,
            1e-5,
            self._VEL * h,
        ]
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + np.diag(np.square(q))

    def update(self, box: np.ndarray) -> None:
        h = self.x[3]
        r = np.diag(np.square([self._POS * h, self._POS * h, 1e-1, self._POS * h]))
        s = self.H @ self.P @ self.H.T + r
        gain = self.P @ self.H.T @ np.linalg.inv(s)
        self.x = self.x + gain @ (_to_xyah(box) - self.H @ self.x)
        self.P = (np.eye(8) - gain @ self.H) @ self.P

    @property
    def box(self) -> np.ndarray:
        cx, cy, a, h = self.x[:4]
        h = max(h, 1e-3)
        w = a * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64)


@dataclass
class _Track:
    track_id: int
    kalman: KalmanBox
    first_seen: float
    last_seen: float
    hits: int = 1
    confirmed: bool = False
    lost: bool = False


@dataclass(frozen=True)
class TrackEnd:
    """A track that ended: ``confirmed`` is False for short-lived tentative tracks (noise, not reported)."""

    track_id: int
    confirmed: bool
    first_seen: float
    last_seen: float
    hits: int


class Tracker:
    """Assigns a stable ``track_id`` to each detection, frame after frame, for one stream."""

    def __init__(self, cfg: TrackConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._ended: list[TrackEnd] = []
        self._next_id = 1

    @property
    def active_ids(self) -> list[int]:
        return [t.track_id for t in self._tracks if t.confirmed]

    @property
    def boxes(self) -> np.ndarray:
        """Current boxes ``[N, 4]`` (xyxy) of every live track, tentative and lost ones included."""
        if not self._tracks:
            return np.zeros((0, 4), np.float32)
        return np.stack([t.kalman.box for t in self._tracks]).astype(np.float32)

    def update(self, dets: Detections, timestamp: float) -> Detections:
        """Track one frame's detections; returns them with ``track_id`` set (``-1`` = not tracked)."""
        cfg = self.cfg
        ids = np.full(len(dets), -1, np.int64)
        for t in self._tracks:
            t.kalman.predict()
        side = (dets.xyxy[:, 2:] - dets.xyxy[:, :2]).max(axis=1) if len(dets) else np.zeros(0)
        tiny = side < cfg.small_face_px
        high_at = np.where(tiny, min(cfg.high_threshold, cfg.small_face_threshold), cfg.high_threshold)
        new_at = np.where(
            tiny, min(cfg.new_track_threshold, cfg.small_face_threshold), cfg.new_track_threshold
        )
        high = np.flatnonzero(dets.score >= high_at)
        low = np.flatnonzero((dets.score >= cfg.low_threshold) & (dets.score < high_at))

        established = [t for t in self._tracks if t.confirmed]
        tentative = [t for t in self._tracks if not t.confirmed]
        grow = cfg.small_face_px
        matched, rest_tracks, rest_high = self._associate(established, dets.xyxy, high, cfg.match_iou, grow)
        tracked_left = [t for t in rest_tracks if not t.lost]
        matched2, rest_tracks2, _ = self._associate(tracked_left, dets.xyxy, low, cfg.low_match_iou, grow)
        matched3, dead_tentative, new_high = self._associate(
            tentative, dets.xyxy, rest_high, cfg.match_iou, grow
        )

        for track, det in matched + matched2 + matched3:
            self._hit(track, dets.xyxy[det], timestamp)
            ids[det] = track.track_id
        unmatched = [t for t in rest_tracks if t.lost] + rest_tracks2
        for track in unmatched:
            track.lost = True
        for track in dead_tentative:
            self._end(track)
        for det in new_high:
            if dets.score[det] >= new_at[det]:
                track = _Track(
                    self._next_id,
                    KalmanBox(dets.xyxy[det]),
                    timestamp,
                    timestamp,
                    confirmed=cfg.min_hits <= 1,
                )
                self._next_id += 1
                self._tracks.append(track)
                ids[det] = track.track_id
        for track in [t for t in self._tracks if t.lost and timestamp - t.last_seen > cfg.max_lost_s]:
            self._end(track)
        return Detections(dets.xyxy, dets.score, dets.landmarks, ids)

    def finished(self) -> list[TrackEnd]:
        """Tracks that ended since the last call (each reported once)."""
        ended, self._ended = self._ended, []
        return ended

    def flush(self) -> list[TrackEnd]:
        """End every track (end of stream) and return all not yet reported."""
        for track in list(self._tracks):
            self._end(track)
        return self.finished()

    def _hit(self, track: _Track, box: np.ndarray, timestamp: float) -> None:
        track.kalman.update(box)
        track.last_seen = timestamp
        track.lost = False
        track.hits += 1
        if track.hits >= self.cfg.min_hits:
            track.confirmed = True

    def _end(self, track: _Track) -> None:
        self._tracks.remove(track)
        self._ended.append(
            TrackEnd(track.track_id, track.confirmed, track.first_seen, track.last_seen, track.hits)
        )

    @staticmethod
    def _associate(
        tracks: list[_Track], boxes: np.ndarray, candidates: np.ndarray, min_iou: float, grow_to: float = 0.0
    ):
        """Hungarian matching on IoU of predicted track boxes and candidate detections (boxes smaller than
        ``grow_to`` px grown to it, :func:`grown`), gated by IoU and size."""
        if not tracks or not len(candidates):
            return [], list(tracks), list(candidates)
        predicted = np.stack([t.kalman.box for t in tracks])
        cand = boxes[candidates].astype(np.float64)
        iou = iou_matrix(grown(predicted, grow_to), grown(cand, grow_to))
        side_t = np.sqrt(np.prod(predicted[:, 2:] - predicted[:, :2], axis=1).clip(1e-6))
        side_d = np.sqrt(np.prod(cand[:, 2:] - cand[:, :2], axis=1).clip(1e-6))
        ratio = np.maximum(side_t[:, None] / side_d[None, :], side_d[None, :] / side_t[:, None])
        allowed = (iou >= max(min_iou, 1e-6)) & (ratio <= _MAX_SIZE_RATIO)
        cost = np.where(allowed, 1.0 - iou, 1e6)
        rows, cols = linear_sum_assignment(cost)
        pairs = [(tracks[r], int(candidates[c])) for r, c in zip(rows, cols) if allowed[r, c]]
        used_t = {id(t) for t, _ in pairs}
        used_d = {d for _, d in pairs}
        return (
            pairs,
            [t for t in tracks if id(t) not in used_t],
            [int(d) for d in candidates if int(d) not in used_d],
        )
