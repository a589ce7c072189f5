"""An identity's timeline: where and when it was seen, across files and cameras, with scores.

:func:`find_timeline` lists every decision that names the identity, the live matches (made when the track ended)
and the retroactive ones (made later by a rematch, :mod:`gallery.rematch`), oldest sighting first: by the time
the track was logged, then its start within the source. Each row says where (source, file or camera, run,
track), when (``start_time``/``end_time``: seconds within the file or stream; for a camera also ``wall_start`` /
``wall_end``: the logged time less the track's duration, and the logged time), the score, whether it is
retroactive (with the rematch and the time it was decided) and the thumbnail. A :class:`gallery.queries.Page`
like the other queries; one statement on an autocommit connection.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from gallery.db import Database
from gallery.decisions import all_decisions
from gallery.errors import QueryError
from gallery.models import Identity, Source, Track
from gallery.queries import (
    Filters,
    Page,
    _check_names,
    _event_filters,
    _iso,
    _page,
    _reader,
    _refuse,
    wall_span,
)

logger = logging.getLogger(__name__)

__all__ = ["find_timeline"]


def _row(r) -> dict:
    wall_start, wall_end = wall_span(r.kind, r.start_time, r.end_time, r.logged_at)
    return {
        "identity": r.identity,
        "source": r.source,
        "kind": r.kind,
        "run_id": r.run_id,
        "track_id": r.track_id,
        "track": r.track_pk,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "logged_at": _iso(r.logged_at),
        "wall_start": wall_start,
        "wall_end": wall_end,
        "score": r.score,
        "retroactive": bool(r.retroactive),
        "rematch_id": r.rematch_id,
        "decided_at": _iso(r.at),
        "thumbnail": r.thumbnail,
    }


def find_timeline(db: Database, f: Filters) -> Page:
    """Every live and retroactive match of ``f.identity`` (required), oldest sighting first; ``source``,
    ``since``/``until`` (when the track was logged) and ``min_score`` narrow it. An unknown name or source raises
    as in the other queries."""
    _refuse(f, "timeline", {"identity", "source", "since", "until", "min_score"})
    if f.identity is None:
        raise QueryError("timeline: expected an identity name, got none")
    ev = all_decisions().c
    stmt = (
        select(
            ev.at,
            ev.score,
            ev.retroactive,
            ev.rematch_id,
            ev.track_pk,
            Track.run_id,
            Track.track_id,
            Track.start_time,
            Track.end_time,
            Track.created_at.label("logged_at"),
            Track.thumbnail,
            Source.name.label("source"),
            Source.kind,
            Identity.name.label("identity"),
        )
        .join(Track, Track.id == ev.track_pk)
        .join(Source, Source.id == Track.source_id)
        .join(Identity, Identity.id == ev.identity_id)
        .where(ev.decision == "match")
        .order_by(Track.created_at, Track.start_time, Track.id, ev.retroactive, ev.id)
    )
    stmt = _event_filters(stmt, f, Track.created_at, ev)
    with _reader(db) as conn:
        return _check_names(conn, f, _page(conn, stmt, f, _row))
