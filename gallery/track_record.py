"""One finished track and its open-set decision as the match log stores them (:class:`TrackRecord`), checked
before anything is written, and the table rows it becomes (a track and its match event)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from core.types import SceneSnapshot
from gallery.errors import MatchLogError
from gallery.models import to_blob
from gallery.track_boxes import pack_boxes

__all__ = ["DECISIONS", "TIME_ORIGINS", "TrackRecord", "candidate_row", "checked", "event_row", "track_row"]

DECISIONS = ("match", "unknown")
TIME_ORIGINS = ("given", "container", "filename", "camera", "unknown")  # where a sighting time comes from


@dataclass(frozen=True)
class TrackRecord:
    """One finished track and its open-set decision.

    ``start_time``/``end_time``: stream seconds; ``template``: the fused unit float32 ``[D]`` of
    ``embedder_id``; ``candidates``: top-k ``(identity_id, name, score)`` best first (tuples, or objects with
    those attributes); ``decision``: ``"match"`` or ``"unknown"``; ``thumbnail``: the best crop, BGR uint8
    ``[H, W, 3]``, or None; ``at``: when the decision was made (aware datetime, default now);
    ``seen_start``/``seen_end``: the wall clock of the first and last frame (aware datetimes, None: unknown) and
    ``time_origin`` where it comes from (:data:`TIME_ORIGINS`; ``unknown`` when there is none); ``scene``: the
    downscaled full frame of the best crop (stored boxed and labelled beside the thumbnail), or None; ``boxes``: the
    track's box on every frame, float32 ``[K, 5]`` (t, x1, y1, x2, y2 in source pixels), or None; ``zones``: the
    names of the camera zones it entered (``tracks.zones``), None where the source has none."""

    track_id: int
    start_time: float
    end_time: float
    frames: int
    crops_embedded: int
    template: np.ndarray
    embedder_id: str
    candidates: Sequence
    decision: str
    threshold: float
    thumbnail: np.ndarray | None = None
    at: datetime | None = None
    seen_start: datetime | None = None
    seen_end: datetime | None = None
    time_origin: str = "unknown"
    scene: SceneSnapshot | None = None
    boxes: np.ndarray | None = None
    zones: tuple[str, ...] | None = None


def candidate_row(c) -> dict:
    ident, name, score = (c.identity_id, c.name, c.score) if hasattr(c, "identity_id") else c
    return {"identity_id": int(ident), "name": str(name), "score": float(score)}


def checked(rec: TrackRecord) -> tuple[np.ndarray, list[dict]]:
    if rec.decision not in DECISIONS:
        raise MatchLogError(
            f"track {rec.track_id}: decision expected one of {DECISIONS}, got {rec.decision!r}"
        )
    if not (rec.end_time >= rec.start_time):
        raise MatchLogError(
            f"track {rec.track_id}: expected end_time >= start_time, got {rec.start_time} .. {rec.end_time}"
        )
    if rec.frames < 1 or not 0 <= rec.crops_embedded <= rec.frames:
        raise MatchLogError(
            f"track {rec.track_id}: expected frames >= 1 and 0 <= crops_embedded <= frames, got "
            f"frames={rec.frames} crops_embedded={rec.crops_embedded}"
        )
    template = np.asarray(rec.template, np.float32)
    if template.ndim != 1 or template.size == 0 or not np.isfinite(template).all():
        raise MatchLogError(
            f"track {rec.track_id}: template expected a finite vector [D], got shape {list(template.shape)}"
        )
    candidates = [candidate_row(c) for c in rec.candidates]
    if rec.decision == "match" and not candidates:
        raise MatchLogError(
            f"track {rec.track_id}: decision 'match' expected at least one candidate, got none"
        )
    if rec.at is not None and rec.at.tzinfo is None:
        raise MatchLogError(f"track {rec.track_id}: 'at' expected a timezone-aware datetime, got a naive one")
    if rec.time_origin not in TIME_ORIGINS:
        raise MatchLogError(
            f"track {rec.track_id}: time_origin expected one of {TIME_ORIGINS}, got {rec.time_origin!r}"
        )
    seen = (rec.seen_start, rec.seen_end)
    if (seen[0] is None) != (seen[1] is None) or (seen[0] is None) != (rec.time_origin == "unknown"):
        raise MatchLogError(
            f"track {rec.track_id}: expected both sighting times with a known origin or neither with 'unknown', "
            f"got {seen[0]} .. {seen[1]} ({rec.time_origin})"
        )
    if seen[0] is not None and (seen[0].tzinfo is None or seen[1].tzinfo is None or seen[1] < seen[0]):
        raise MatchLogError(
            f"track {rec.track_id}: sighting times expected aware datetimes in order, got {seen[0]} .. {seen[1]}"
        )
    if rec.boxes is not None:
        try:
            pack_boxes(rec.boxes)
        except MatchLogError as exc:
            raise MatchLogError(f"track {rec.track_id}: {exc}") from None
    return template, candidates


def track_row(r: TrackRecord, thumb: str | None, now: datetime, snapshot: str | None = None) -> dict:
    ints = {k: int(getattr(r, k)) for k in ("track_id", "frames", "crops_embedded")}
    times = {"start_time": float(r.start_time), "end_time": float(r.end_time), "created_at": r.at or now}
    vector = {"dim": int(np.asarray(r.template).size), "template": to_blob(r.template)}
    seen = {"seen_start": r.seen_start, "seen_end": r.seen_end, "time_origin": r.time_origin}
    files = {"thumbnail": thumb, "snapshot": snapshot}
    boxes = {"boxes": None if r.boxes is None or not len(r.boxes) else pack_boxes(r.boxes)}
    zones = {"zones": None if r.zones is None else list(r.zones)}
    return ints | times | seen | vector | files | boxes | {"embedder_id": r.embedder_id} | zones


def event_row(r: TrackRecord, known, now: datetime) -> dict:
    cands = [candidate_row(c) for c in r.candidates]
    best = cands[0]["identity_id"] if r.decision == "match" else None
    score = cands[0]["score"] if cands else None
    decision = {
        "decision": r.decision,
        "threshold": float(r.threshold),
        "candidates": cands,
        "at": r.at or now,
    }
    return {"identity_id": best if best in known else None, "score": score} | decision
