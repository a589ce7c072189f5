"""Search the match log by face: every logged track template of one embedder, ranked by cosine to a query.

The match log keeps each track's fused unit template (``tracks.template``). :func:`search_tracks` scores a query
template against the templates of one ``embedder_id`` (templates of other embedders never mix), optionally only
those of one source and logged within a time window, and returns the best ``top`` at or above ``min_score`` with
what the match log says of them. The search is exact, streamed from SQL in chunks of ``CHUNK`` rows: memory stays
bounded whatever the log holds.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import select

from gallery.db import Database
from gallery.errors import EmbeddingError, QueryError
from gallery.models import Identity, MatchEvent, Source, Track, from_blob

__all__ = ["CHUNK", "TrackHit", "search_tracks"]

CHUNK = 10_000


@dataclass(frozen=True)
class TrackHit:
    """A logged track found by face: where and when (stream seconds of the file or camera; ``logged_at`` wall
    time), its score against the query, and the decision the match log holds for it."""

    score: float
    source: str
    kind: str
    run_id: int
    track_id: int
    start_time: float
    end_time: float
    logged_at: datetime
    decision: str
    identity: str | None
    thumbnail: str | None

    def as_row(self) -> dict:
        return {
            "score": round(self.score, 4),
            "source": self.source,
            "kind": self.kind,
            "run_id": self.run_id,
            "track_id": self.track_id,
            "start_time": round(self.start_time, 3),
            "end_time": round(self.end_time, 3),
            "logged_at": self.logged_at.isoformat(),
            "decision": self.decision,
            "identity": self.identity,
            "thumbnail": self.thumbnail,
        }


def search_tracks(
    db: Database,
    query: np.ndarray,
    embedder_id: str,
    top: int = 10,
    min_score: float | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[TrackHit]:
    """The ``top`` logged tracks of ``embedder_id`` most like the unit template ``query [D]``, best first."""
    query = np.asarray(query, np.float32).reshape(-1)
    if not np.isfinite(query).all() or not np.linalg.norm(query) > 0:
        raise EmbeddingError("search: expected a finite, non-zero query template, got one that is not")
    if not 1 <= top <= 10_000:
        raise QueryError(f"top: expected 1..10000, got {top}")
    if since is not None and until is not None and since >= until:
        raise QueryError(
            f"time range: expected since before until, got {since.isoformat()} >= {until.isoformat()}"
        )
    query = query / np.linalg.norm(query)
    stmt = select(Track.id, Track.dim, Track.template).where(Track.embedder_id == embedder_id)
    if source is not None:
        stmt = stmt.join(Source, Track.source_id == Source.id).where(Source.name == source)
    if since is not None:
        stmt = stmt.where(Track.created_at >= since)
    if until is not None:
        stmt = stmt.where(Track.created_at < until)
    best: list[tuple[float, int]] = []  # min-heap of (score, track pk)
    with db.session() as session:
        result = session.execute(stmt.execution_options(yield_per=CHUNK))
        for rows in result.partitions():
            dims = {r.dim for r in rows}
            if dims != {len(query)}:
                raise EmbeddingError(
                    f"search: expected templates of dimension {len(query)}, got {sorted(dims)}"
                )
            scores = np.stack([from_blob(r.template, r.dim) for r in rows]) @ query
            for score, row in zip(scores.tolist(), rows):
                if min_score is not None and score < min_score:
                    continue
                if len(best) < top:
                    heapq.heappush(best, (score, row.id))
                elif score > best[0][0]:
                    heapq.heapreplace(best, (score, row.id))
        ranked = sorted(best, reverse=True)
        return [_hit(session, pk, score) for score, pk in ranked]


def _hit(session, pk: int, score: float) -> TrackHit:
    track = session.get(Track, pk)
    source = session.get(Source, track.source_id)
    event = session.scalar(select(MatchEvent).where(MatchEvent.track_pk == pk))
    identity = session.get(Identity, event.identity_id) if event and event.identity_id else None
    return TrackHit(
        score=float(score),
        source=source.name,
        kind=source.kind,
        run_id=track.run_id,
        track_id=track.track_id,
        start_time=track.start_time,
        end_time=track.end_time,
        logged_at=track.created_at,
        decision=event.decision if event else "unknown",
        identity=identity.name if identity and event.decision == "match" else None,
        thumbnail=track.thumbnail,
    )
