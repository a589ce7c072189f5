"""Reviews: a person confirms or rejects what the system decided about a track, acknowledges an alert, or names an
unknown track. Each review is a new row (:class:`gallery.access_models.Review`, who and when); the logged decision
is never rewritten. What a review makes of the decisions everywhere is :mod:`gallery.review_state`.

- ``confirmed`` / ``rejected``: a match (kind ``match``, the track's match event) or a retroactive match (kind
  ``retro``, with its ``retro_id``) of the track, the current one unless ``identity`` names another of its matches.
  The review is of the (track, identity) pair: a rematch that deletes the retroactive match leaves the review (its
  ``retro_id`` then NULL), which still applies to the pair.
- ``acknowledged``: an alert on a match of the track (kind ``alert``).
- ``named``: an unknown track (or one whose match was rejected) named as an enrolled ``identity`` (kind
  ``unknown``).

A confirmed or named track's crops may go into the person's template through the from-track enrollment: the
review offers the command (``offer``), it never enrolls. :func:`find_reviews` lists reviews newest first;
:func:`open_items` lists the matches nobody confirmed or rejected yet, best score first, with their counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import and_, exists, func, select

from gallery.access_models import Review
from gallery.db import Database
from gallery.decisions import all_decisions
from gallery.errors import QueryError
from gallery.models import Identity, MatchEvent, RetroMatch, Source, Track, utcnow
from gallery.queries import (
    TRACK_COLUMNS,
    Filters,
    Page,
    _check_names,
    _iso,
    _page,
    _reader,
    _refuse,
    track_fields,
)
from gallery.refs import parse_track_ref, track_ref
from gallery.review_state import MATCH_KINDS, rejected_pairs

logger = logging.getLogger(__name__)

__all__ = [
    "KIND_OF",
    "MAX_NOTE",
    "VERDICTS",
    "ReviewError",
    "TrackNotLogged",
    "add_review",
    "enroll_offer",
    "find_reviews",
    "open_items",
]

VERDICTS = ("confirmed", "rejected", "acknowledged", "named")
KIND_OF = {"acknowledged": "alert", "named": "unknown"}  # confirmed/rejected: match or retro
MAX_NOTE = 2000
MAX_REVIEWER = 200


class ReviewError(QueryError):
    """A review that cannot be recorded: the reason in one line."""


class TrackNotLogged(ReviewError):
    """A review of a track that is not in the match log."""


@dataclass(frozen=True)
class _Match:
    identity_id: int
    name: str
    kind: str  # match | retro
    retro_id: int | None


def enroll_offer(ref: str, name: str) -> str:
    """The command that adds track ``ref``'s crops to ``name``'s template (the from-track enrollment)."""
    return f"run_pipeline.py enroll --name {name} --from-track {ref}"


def _check_text(verdict: str, reviewer: str, note: str) -> None:
    if verdict not in VERDICTS:
        raise ReviewError(f"review: expected a verdict {', '.join(VERDICTS)}, got {verdict!r}")
    if not reviewer or len(reviewer) > MAX_REVIEWER or "\x00" in reviewer:
        raise ReviewError(
            f"review: expected a reviewer name of 1..{MAX_REVIEWER} characters, got {reviewer!r}"
        )
    if len(note) > MAX_NOTE or "\x00" in note:
        raise ReviewError(f"review note: expected at most {MAX_NOTE} characters without NUL, got {len(note)}")


def _matches(session, track_pk: int) -> list[_Match]:
    """The track's matches, oldest first: its logged match, then its retroactive matches."""
    found = [
        _Match(i, n, "match", None)
        for i, n in session.execute(
            select(MatchEvent.identity_id, Identity.name)
            .join(Identity, Identity.id == MatchEvent.identity_id)
            .where(MatchEvent.track_pk == track_pk, MatchEvent.decision == "match")
        )
    ]
    found += [
        _Match(i, n, "retro", rid)
        for rid, i, n in session.execute(
            select(RetroMatch.id, RetroMatch.identity_id, Identity.name)
            .join(Identity, Identity.id == RetroMatch.identity_id)
            .where(RetroMatch.track_pk == track_pk)
            .order_by(RetroMatch.id)
        )
    ]
    return found


def _pick(ref: str, matches: list[_Match], identity: str | None, verdict: str) -> _Match:
    if not matches:
        what = "name it (--name)" if verdict != "acknowledged" else "no alert was raised for it"
        raise ReviewError(
            f"track {ref}: a {verdict} review expected a match or a retroactive match on the track, got none "
            f"({what})"
        )
    if identity is None:
        return matches[-1]  # the current decision: the newest retroactive match, else the logged one
    for m in reversed(matches):
        if m.name == identity:
            return m
    raise ReviewError(
        f"track {ref}: expected a match to one of {', '.join(sorted({m.name for m in matches}))}, got {identity!r}"
    )


def add_review(
    db: Database, ref: str, verdict: str, reviewer: str, *, identity: str | None = None, note: str = ""
) -> dict:
    """Record ``reviewer``'s ``verdict`` on track ``ref`` (see the module; ``identity``: the match judged, or the
    name given to an unknown track) in one transaction; returns the review as a row, with ``offer`` (the
    from-track enrollment command, for ``confirmed`` and ``named``; else None). Bad input raises
    :class:`ReviewError` (an unknown name: :class:`gallery.errors.IdentityNotFoundError`), nothing written."""
    note = note or ""
    _check_text(verdict, reviewer, note)
    run_id, track_id = parse_track_ref(ref)
    ref = track_ref(run_id, track_id)
    with db.session() as session:
        pk = session.scalar(select(Track.id).where(Track.run_id == run_id, Track.track_id == track_id))
        if pk is None:
            raise TrackNotLogged(f"track {ref}: expected a track of the match log, got none such")
        matches = _matches(session, pk)
        if verdict == "named":
            if identity is None:
                raise ReviewError(f"track {ref}: naming a track expected an identity name, got none")
            ident = session.scalar(select(Identity.id).where(Identity.name == identity))
            if ident is None:
                raise ReviewError(f"track {ref}: expected an enrolled identity to name it, got {identity!r}")
            rejected = {i for p, i in rejected_pairs(session, [pk]) if p == pk}
            standing = [m.name for m in matches if m.identity_id not in rejected]
            if standing:
                raise ReviewError(
                    f"track {ref}: naming expected an unknown track (or a rejected match), got a match to "
                    f"{standing[-1]} (confirm or reject it)"
                )
            kind, retro_id, name = "unknown", None, identity
        else:
            m = _pick(ref, matches, identity, verdict)
            ident, name, retro_id = m.identity_id, m.name, m.retro_id
            kind = KIND_OF.get(verdict, m.kind)
        row = Review(
            track_pk=pk,
            kind=kind,
            verdict=verdict,
            identity_id=ident,
            retro_id=retro_id,
            reviewer=reviewer,
            note=note,
            at=utcnow(),
        )
        session.add(row)
        session.flush()
        out = {
            "id": row.id,
            "ref": ref,
            "kind": kind,
            "verdict": verdict,
            "identity": name,
            "retro_id": retro_id,
            "reviewer": reviewer,
            "note": note,
            "at": _iso(row.at),
            "offer": enroll_offer(ref, name) if verdict in ("confirmed", "named") else None,
        }
    logger.info("track %s: %s %s (%s) by %s", ref, verdict, name, kind, reviewer)
    return out


def find_reviews(db: Database, f: Filters) -> Page:
    """Reviews, newest first: id, the track (``ref`` and its fields, source), kind, verdict, identity, retroactive
    match (``retro_id``, None once a rematch undo deleted it), reviewer, note, ``at``. ``identity`` and ``source``
    narrow by name; ``since``/``until`` by review time."""
    _refuse(f, "reviews", {"identity", "source", "since", "until"})
    stmt = (
        select(
            Review.id,
            Review.kind,
            Review.verdict,
            Review.retro_id,
            Review.reviewer,
            Review.note,
            Review.at,
            *TRACK_COLUMNS,
            Source.name.label("source"),
            Identity.name.label("identity"),
        )
        .join(Track, Track.id == Review.track_pk)
        .join(Source, Source.id == Track.source_id)
        .outerjoin(Identity, Identity.id == Review.identity_id)
        .order_by(Review.at.desc(), Review.id.desc())
    )
    if f.identity is not None:
        stmt = stmt.where(Identity.name == f.identity)
    if f.source is not None:
        stmt = stmt.where(Source.name == f.source)
    if f.since is not None:
        stmt = stmt.where(Review.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(Review.at < f.until)
    with _reader(db) as conn:
        page = _page(
            conn,
            stmt,
            f,
            lambda r: (
                track_fields(r)
                | {
                    "id": r.id,
                    "source": r.source,
                    "kind": r.kind,
                    "verdict": r.verdict,
                    "identity": r.identity,
                    "retro_id": r.retro_id,
                    "reviewer": r.reviewer,
                    "note": r.note,
                    "at": _iso(r.at),
                }
            ),
        )
        return _check_names(conn, f, page)


def open_items(db: Database, f: Filters) -> dict:
    """Matches (logged and retroactive) whose (track, identity) pair nobody confirmed or rejected yet, best score
    first (``rows``: the track's fields, source, identity, score, ``retroactive``, ``at``; ``page``/``has_more``),
    and how many there are (``counts``: ``match``, ``retro``, ``total``). ``identity``/``source`` narrow them."""
    _refuse(f, "open reviews", {"identity", "source"})
    ev = all_decisions().c
    judged = exists().where(
        and_(
            Review.track_pk == ev.track_pk, Review.identity_id == ev.identity_id, Review.kind.in_(MATCH_KINDS)
        )
    )
    where = [ev.decision == "match", ~judged]
    if f.identity is not None:
        where.append(
            ev.identity_id == select(Identity.id).where(Identity.name == f.identity).scalar_subquery()
        )
    if f.source is not None:
        where.append(ev.source_id == select(Source.id).where(Source.name == f.source).scalar_subquery())
    stmt = (
        select(
            ev.at,
            ev.score,
            ev.retroactive,
            *TRACK_COLUMNS,
            Track.thumbnail,
            Source.name.label("source"),
            Identity.name.label("identity"),
        )
        .join(Track, Track.id == ev.track_pk)
        .join(Source, Source.id == ev.source_id)
        .join(Identity, Identity.id == ev.identity_id)
        .where(*where)
        .order_by(ev.score.desc(), ev.at.desc(), ev.track_pk)
    )
    counts = select(ev.retroactive, func.count()).where(*where).group_by(ev.retroactive)
    with _reader(db) as conn:
        page = _page(
            conn,
            stmt,
            f,
            lambda r: (
                track_fields(r)
                | {
                    "source": r.source,
                    "identity": r.identity,
                    "score": r.score,
                    "retroactive": bool(r.retroactive),
                    "at": _iso(r.at),
                    "thumbnail": r.thumbnail,
                }
            ),
        )
        page = _check_names(conn, f, page)
        by = {bool(retro): n for retro, n in conn.execute(counts)}
    n_live, n_retro = by.get(False, 0), by.get(True, 0)
    return page.as_dict() | {"counts": {"match": n_live, "retro": n_retro, "total": n_live + n_retro}}
