"""The decisions of the match log as the read side sees them: what was decided when a track ended (its match
event) and what was decided later (its retroactive matches, :mod:`gallery.rematch`).

:func:`all_decisions` is every decision as one table (``query matches``, timelines); :func:`current_decision` is
a track's decision now: its newest retroactive match, else its match event (``query tracks``);
:func:`with_decisions` adds both, the current and the logged one, to a statement over tracks. None rewrites anything:
a match event stays what was decided then.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Integer,
    Select,
    String,
    Subquery,
    case,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from gallery.models import Identity, MatchEvent, RetroMatch, Track

__all__ = ["all_decisions", "current_decision", "with_decisions"]


def all_decisions() -> Subquery:
    """Match events and retroactive matches (decision ``match``, ``retroactive`` true, ``rematch_id``) as one
    table: a UNION ALL of single-table selects, so that a filter on it reaches both tables' time indexes and a
    newest-first page is a merge of two index scans."""
    cols = ("id", "at", "track_pk", "source_id", "identity_id", "score", "threshold", "candidates")
    live = [MatchEvent.decision, literal(False, Boolean), cast(null(), Integer)]
    retro = [cast(literal("match"), String(16)), literal(True, Boolean), RetroMatch.rematch_id]
    extra = ("decision", "retroactive", "rematch_id")
    return union_all(
        select(*(getattr(MatchEvent, c).label(c) for c in cols), *(v.label(c) for v, c in zip(live, extra))),
        select(*(getattr(RetroMatch, c).label(c) for c in cols), *(v.label(c) for v, c in zip(retro, extra))),
    ).subquery("events")


def current_decision() -> tuple[tuple, ReadOnlyColumnCollection]:
    """A track's current decision, for a statement over ``tracks`` outer-joined to its ``match_events`` row:
    ``(join, columns)``, where ``join`` outer-joins its newest retroactive match and ``columns`` are
    ``identity_id``, ``decision``, ``score`` (that match's when there is one, else the logged decision's) and
    ``retroactive``."""
    later = RetroMatch.__table__.alias("later")
    newest = select(func.max(later.c.id)).where(later.c.track_pk == Track.id).correlate(Track)
    named = RetroMatch.id.is_not(None)
    columns = select(
        func.coalesce(RetroMatch.identity_id, MatchEvent.identity_id).label("identity_id"),
        case((named, "match"), else_=MatchEvent.decision).label("decision"),
        case((named, RetroMatch.score), else_=MatchEvent.score).label("score"),
        named.label("retroactive"),
    ).selected_columns
    return (RetroMatch, RetroMatch.id == newest.scalar_subquery()), columns


def with_decisions(stmt: Select) -> tuple[Select, ReadOnlyColumnCollection]:
    """``stmt`` (a select over ``tracks``) with each track's current decision (:func:`current_decision`:
    ``decision``, ``score``, ``retroactive``, ``identity_id``, ``identity`` (the name), ``rematch_id``) and its logged
    one (``logged_decision``, ``logged_score``, ``logged_identity``) added as columns; returns it and the current
    decision's columns, for filters."""
    retro, current = current_decision()
    logged = Identity.__table__.alias("logged")
    stmt = stmt.add_columns(
        current.decision,
        current.score,
        current.retroactive,
        current.identity_id,
        Identity.name.label("identity"),
        RetroMatch.rematch_id,
        MatchEvent.decision.label("logged_decision"),
        MatchEvent.score.label("logged_score"),
        logged.c.name.label("logged_identity"),
    )
    stmt = (
        stmt.outerjoin(MatchEvent, MatchEvent.track_pk == Track.id)
        .outerjoin(*retro)
        .outerjoin(Identity, Identity.id == current.identity_id)
        .outerjoin(logged, logged.c.id == MatchEvent.identity_id)
    )
    return stmt, current
