"""Search the match log by face: every logged track template of one embedder, ranked by cosine to a query.

The match log keeps each track's fused unit template (``tracks.template``). :func:`search_tracks` scores a query
template against the templates of one ``embedder_id`` (templates of other embedders never mix), optionally only
those of one source and logged within a time window, and returns the best ``top`` at or above ``min_score`` with
what the match log says of them.

Given the track indexes (:class:`gallery.track_index.TrackIndexes`), it takes candidates from the embedder's index
(exact below ``gallery.index.hnsw_above`` tracks, HNSW above), then reads them from SQL with the filters applied and
scores them on their stored templates. It asks the index for more candidates (up to :data:`MAX_FETCH`) while the
filters leave fewer than ``top``; beyond that, or without a usable index, the search is exact: streamed from SQL in
chunks of ``CHUNK`` rows, memory bounded whatever the log holds. With an exact index both give the same answer.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Select, select

from gallery.db import Database
from gallery.decisions import current_decision
from gallery.errors import EmbeddingError, QueryError
from gallery.models import Identity, MatchEvent, Source, Track, from_blob
from gallery.queries import TRACK_COLUMNS, track_fields
from gallery.refs import track_ref
from gallery.track_index import CHUNK, TrackIndexes

logger = logging.getLogger(__name__)

__all__ = ["CHUNK", "MAX_FETCH", "TrackHit", "search_tracks"]

MAX_FETCH = 16_384  # most candidates asked of the index before the search goes exact
IN_CHUNK = 5_000  # ids per IN (...) list


@dataclass(frozen=True)
class TrackHit:
    """A logged track found by face: which (``ref``), where and when (sighting times ``seen_start``/``seen_end``
    with their ``time_origin``, None when unknown; stream seconds of the file or camera; ``logged_at``: when it was
    logged), its score against the query, and its current decision: its newest retroactive match (``retroactive``
    true) when a later rematch named it, else what was decided when it ended (:mod:`gallery.decisions`)."""

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
    retroactive: bool = False
    seen_start: datetime | None = None
    seen_end: datetime | None = None
    time_origin: str = "unknown"

    @property
    def ref(self) -> str:
        return track_ref(self.run_id, self.track_id)

    def as_row(self) -> dict:
        return track_fields(self) | {
            "score": round(self.score, 4),
            "source": self.source,
            "kind": self.kind,
            "start_time": round(self.start_time, 3),
            "end_time": round(self.end_time, 3),
            "decision": self.decision,
            "identity": self.identity,
            "retroactive": self.retroactive,
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
    indexes: TrackIndexes | None = None,
) -> list[TrackHit]:
    """The ``top`` logged tracks of ``embedder_id`` most like the unit template ``query [D]``, best first (equal
    scores: the later track first). ``indexes``: search through the embedder's track index; None: exact."""
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
    filters = (source, since, until)
    if indexes is not None:
        hits = _indexed(db, indexes, query, embedder_id, top, min_score, filters)
        if hits is not None:
            return hits
    return _exact(db, query, embedder_id, top, min_score, filters)


def _filtered(stmt: Select, filters: tuple) -> Select:
    """``stmt`` (of tracks, with their source joined when filtered by it) restricted by source and time."""
    source, since, until = filters
    if source is not None:
        stmt = stmt.where(Source.name == source)
    if since is not None:
        stmt = stmt.where(Track.seen_start >= since)
    if until is not None:
        stmt = stmt.where(Track.seen_start < until)
    return stmt


def _scores(rows, query: np.ndarray) -> np.ndarray:
    dims = {r.dim for r in rows}
    if dims != {len(query)}:
        raise EmbeddingError(f"search: expected templates of dimension {len(query)}, got {sorted(dims)}")
    return np.stack([from_blob(r.template, r.dim) for r in rows]) @ query


def _indexed(db, indexes, query, embedder_id, top, min_score, filters) -> list[TrackHit] | None:
    """Candidates from the track index, read and scored from SQL; None when the exact search must answer (no
    usable index, or filters that leave too few of ``MAX_FETCH`` candidates)."""
    try:
        index = indexes.get(embedder_id)
    except EmbeddingError as exc:  # templates of several dimensions: the exact search says which
        logger.warning("track index of %s unusable (%s): exact search", embedder_id, exc)
        return None
    if index is None or index.dim != len(query):
        return None
    filtered = any(
        f is not None for f in filters
    )  # else every candidate qualifies (min_score only cuts the tail)
    fetch = min(max(4 * top, 64) if filtered else top, MAX_FETCH)
    while True:
        scores, ids = index.search(query, fetch)
        if not len(ids):
            return []
        with db.engine.connect() as conn:  # read only: without the ORM's overhead
            rows = _rows(conn, ids.tolist(), embedder_id, filters)
        hits = _ranked(rows, _scores(rows, query) if rows else [], min_score)
        exhausted = len(ids) < fetch or (min_score is not None and float(scores[-1]) < min_score)
        if len(hits) >= top or exhausted:
            return hits[:top]
        if fetch >= MAX_FETCH:
            return None
        fetch = min(fetch * 8, MAX_FETCH)


def _exact(db, query, embedder_id, top, min_score, filters) -> list[TrackHit]:
    """Every template of the embedder (that the filters let through), streamed from SQL in chunks."""
    stmt = select(Track.id, Track.dim, Track.template).where(Track.embedder_id == embedder_id)
    if filters[0] is not None:
        stmt = stmt.join(Source, Track.source_id == Source.id)
    best: list[tuple[float, int]] = []  # min-heap of (score, track pk)
    with db.session() as session:
        result = session.execute(_filtered(stmt, filters).execution_options(yield_per=CHUNK))
        for rows in result.partitions():
            for score, row in zip(_scores(rows, query).tolist(), rows):
                if min_score is not None and score < min_score:
                    continue
                if len(best) < top:
                    heapq.heappush(best, (score, row.id))
                elif (score, row.id) > best[0]:
                    heapq.heapreplace(best, (score, row.id))
        rows = _rows(session, [pk for _, pk in best], embedder_id, (None, None, None))
    return _ranked(rows, _scores(rows, query) if rows else [], None)


_RETRO, _CURRENT = current_decision()
_ROWS = (  # a track with its source, decision and identity; built once (building a select costs a search's time)
    select(
        Track.id,
        Track.dim,
        Track.template,
        *TRACK_COLUMNS,
        Track.thumbnail,
        Source.name.label("source"),
        Source.kind,
        _CURRENT.decision,
        _CURRENT.retroactive,
        Identity.name.label("identity"),
    )
    .join(Source, Track.source_id == Source.id)
    .outerjoin(MatchEvent, MatchEvent.track_pk == Track.id)
    .outerjoin(*_RETRO)
    .outerjoin(Identity, Identity.id == _CURRENT.identity_id)
)


def _rows(session, pks: list[int], embedder_id: str, filters: tuple) -> list:
    """The tracks of ``pks`` that the filters let through, with their source, decision and identity."""
    stmt = _filtered(_ROWS.where(Track.embedder_id == embedder_id), filters)
    return [
        r
        for s in range(0, len(pks), IN_CHUNK)
        for r in session.execute(stmt.where(Track.id.in_(pks[s : s + IN_CHUNK])))
    ]


def _ranked(rows: list, scores, min_score: float | None) -> list[TrackHit]:
    """Hits of ``rows`` scored ``scores``, at or above ``min_score``, best first (equal scores: later track first)."""
    hits = [(float(s), r) for s, r in zip(scores, rows) if min_score is None or s >= min_score]
    hits.sort(key=lambda h: (h[0], h[1].id), reverse=True)
    return [
        TrackHit(
            score=score,
            source=r.source,
            kind=r.kind,
            run_id=r.run_id,
            track_id=r.track_id,
            start_time=r.start_time,
            end_time=r.end_time,
            logged_at=r.logged_at,
            decision=r.decision or "unknown",
            identity=r.identity if r.decision == "match" else None,
            thumbnail=r.thumbnail,
            retroactive=bool(r.retroactive),
            seen_start=r.seen_start,
            seen_end=r.seen_end,
            time_origin=r.time_origin,
        )
        for score, r in hits
    ]
