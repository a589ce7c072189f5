"""An identity's timeline: where and when it was seen, across files and cameras, with scores.

:func:`find_timeline` lists every decision that names the identity, the live matches (made when the track ended)
and the retroactive ones (made later by a rematch, :mod:`gallery.rematch`), oldest sighting first: by sighting
time (tracks whose time is unknown after those with one, by the time they were logged), then the start within the
source. Each row says which track (``ref``) and where (source, file or camera), when (the sighting times and
their origin, the offsets within the source, when it was logged; :func:`gallery.queries.track_fields`), the
score, whether it is retroactive (with the rematch and the time it was decided), the thumbnail and the review of
the (track, identity) pair (``review``/``reviewed``: a rejected row is not that person, :mod:`gallery.review_state`). A
:class:`gallery.queries.Page` like the other queries; one statement on an autocommit connection.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from gallery.db import Database
from gallery.decisions import all_decisions
from gallery.errors import QueryError
from gallery.models import Identity, Source, Track
from gallery.queries import (
    TRACK_COLUMNS,
    Filters,
    Page,
    _check_names,
    _event_filters,
    _iso,
    _page,
    _reader,
    _refuse,
    track_fields,
)
from gallery.review_state import review_fields, with_review

logger = logging.getLogger(__name__)

__all__ = ["find_timeline"]


def _row(r) -> dict:
    return (
        track_fields(r)
        | {
            "identity": r.identity,
            "source": r.source,
            "kind": r.kind,
            "score": r.score,
            "retroactive": bool(r.retroactive),
            "rematch_id": r.rematch_id,
            "decided_at": _iso(r.at),
            "thumbnail": r.thumbnail,
        }
        | review_fields(r)
    )


def find_timeline(db: Database, f: Filters) -> Page:
    """Every live and retroactive match of ``f.identity`` (required), oldest sighting first; ``source``,
    ``since``/``until`` (sighting time) and ``min_score`` narrow it. An unknown name or source raises
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
            *TRACK_COLUMNS,
            Track.thumbnail,
            Source.name.label("source"),
            Source.kind,
            Identity.name.label("identity"),
        )
        .join(Track, Track.id == ev.track_pk)
        .join(Source, Source.id == Track.source_id)
        .join(Identity, Identity.id == ev.identity_id)
        .where(ev.decision == "match")
        .order_by(
            Track.seen_start.is_(None),
            Track.seen_start,
            Track.created_at,
            Track.start_time,
            Track.id,
            ev.retroactive,
            ev.id,
        )
    )
    stmt = with_review(_event_filters(stmt, f, Track.seen_start, ev), ev.track_pk, ev.identity_id)
    with _reader(db) as conn:
        return _check_names(conn, f, _page(conn, stmt, f, _row))
