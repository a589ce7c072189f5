"""What people's reviews (:class:`gallery.access_models.Review`) make of the logged decisions, for every reader.

A review never rewrites a decision; readers put it beside the decision. For one row naming ``identity`` on a track,
the review that applies is the newest confirm or reject of that (track, identity) pair (a
review of a match or of a retroactive match: both judge the pair), else the newest acknowledgment of an alert on
it; for a row naming nobody (an unknown track), the newest naming of the track. :func:`with_review` adds it to a
reader's statement (still one statement) and :func:`review_fields` to its rows as ``review`` (``kind``,
``verdict``, ``identity``, ``reviewer``, ``note``, ``at``) and ``reviewed`` (the verdict alone, for tables), None
when there is none.

A pair whose newest confirm or reject is a reject (:func:`rejected_pairs`) is "not that person": no rematch names
it again, no further alert is raised for its track (:func:`rejected_tracks`), and calibration counts its score as a
known impostor (:func:`known_impostor_scores`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timezone

import numpy as np
from sqlalchemy import Connection, Select, case, func, select
from sqlalchemy.orm import Session

from gallery.access_models import Review
from gallery.models import Identity, Template, Track, from_blob

logger = logging.getLogger(__name__)

__all__ = [
    "MATCH_KINDS",
    "known_impostor_scores",
    "rejected_pairs",
    "rejected_tracks",
    "review_fields",
    "with_review",
]

MATCH_KINDS = ("match", "retro")  # reviews that judge a (track, identity) pair
CHUNK = 900  # keys per IN list


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def _newest(track_pk, *where):
    """The id of the newest review of the track ``track_pk`` (a column of the enclosing statement) meeting
    ``where``, a scalar subquery read off the index (track_pk, at, id)."""
    r = Review.__table__.alias("r")
    return (
        select(r.c.id)
        .where(r.c.track_pk == track_pk, *(w(r.c) for w in where))
        .order_by(r.c.at.desc(), r.c.id.desc())
        .limit(1)
        .correlate_except(r)
        .scalar_subquery()
    )


def with_review(stmt: Select, track_pk, identity_id, decision=None) -> Select:
    """``stmt`` with the review that applies to each of its rows (see the module) added as columns
    (``review_kind``, ``review_verdict``, ``review_identity``, ``review_reviewer``, ``review_note``, ``review_at``;
    :func:`review_fields` makes them a row's fields); ``track_pk``/``identity_id``/``decision``: the row's track,
    identity and decision columns (``decision`` None: every row is a match). Still one statement."""
    pair = _newest(track_pk, lambda c: c.identity_id == identity_id, lambda c: c.kind.in_(MATCH_KINDS))
    alert = _newest(track_pk, lambda c: c.identity_id == identity_id, lambda c: c.kind == "alert")
    named = _newest(track_pk, lambda c: c.kind == "unknown")
    pick = func.coalesce(pair, alert)
    if decision is not None:
        pick = case((decision == "match", pick), else_=named)
    rv = Review.__table__.alias("rv")
    who = Identity.__table__.alias("rv_identity")
    return (
        stmt.add_columns(
            rv.c.kind.label("review_kind"),
            rv.c.verdict.label("review_verdict"),
            who.c.name.label("review_identity"),
            rv.c.reviewer.label("review_reviewer"),
            rv.c.note.label("review_note"),
            rv.c.at.label("review_at"),
        )
        .outerjoin(rv, rv.c.id == pick)
        .outerjoin(who, who.c.id == rv.c.identity_id)
    )


def review_fields(r) -> dict:
    """``review`` (a dict, None without one) and ``reviewed`` (its verdict) of a row of :func:`with_review`."""
    if r.review_verdict is None:
        return {"review": None, "reviewed": None}
    at = r.review_at
    review = {
        "kind": r.review_kind,
        "verdict": r.review_verdict,
        "identity": r.review_identity,
        "reviewer": r.review_reviewer,
        "note": r.review_note,
        "at": _iso(at.replace(tzinfo=timezone.utc) if at is not None and at.tzinfo is None else at),
    }
    return {"review": review, "reviewed": r.review_verdict}


def rejected_pairs(
    session: Session | Connection, track_pks: Iterable[int] | None = None
) -> set[tuple[int, int]]:
    """The (track row id, identity id) pairs whose newest confirm or reject is a reject; of ``track_pks`` only
    when given."""
    stmt = (
        select(Review.track_pk, Review.identity_id, Review.verdict)
        .where(Review.kind.in_(MATCH_KINDS), Review.identity_id.is_not(None))
        .order_by(Review.at, Review.id)
    )
    newest: dict[tuple[int, int], str] = {}
    pks = None if track_pks is None else sorted(set(track_pks))
    chunks = [None] if pks is None else [pks[i : i + CHUNK] for i in range(0, len(pks), CHUNK)]
    for chunk in chunks:
        part = stmt if chunk is None else stmt.where(Review.track_pk.in_(chunk))
        for pk, ident, verdict in session.execute(part):
            newest[(pk, ident)] = verdict
    return {pair for pair, verdict in newest.items() if verdict == "rejected"}


def rejected_tracks(session: Session | Connection, track_pks: Iterable[int]) -> set[int]:
    """The tracks among ``track_pks`` with a rejected pair: no further alert is raised for them."""
    return {pk for pk, _ in rejected_pairs(session, track_pks)}


def known_impostor_scores(session: Session, embedder_id: str) -> np.ndarray:
    """``[P]`` cosine scores of the rejected pairs' track templates of ``embedder_id`` against their identity's
    template of that embedder (pairs whose identity has none are left out)."""
    pairs = rejected_pairs(session)
    if not pairs:
        return np.zeros(0)
    tracks = dict(
        session.execute(
            select(Track.id, Track.template).where(
                Track.id.in_({pk for pk, _ in pairs}), Track.embedder_id == embedder_id
            )
        )
        .tuples()
        .all()
    )
    templates = {
        ident: (blob, dim)
        for ident, blob, dim in session.execute(
            select(Template.identity_id, Template.vector, Template.dim).where(
                Template.embedder_id == embedder_id, Template.identity_id.in_({i for _, i in pairs})
            )
        )
    }
    scores = []
    for pk, ident in sorted(pairs):
        if pk not in tracks or ident not in templates:
            continue
        blob, dim = templates[ident]
        track = np.frombuffer(tracks[pk], dtype="<f4")
        if track.shape != (dim,):
            continue
        gallery = from_blob(blob, dim)
        norm = float(np.linalg.norm(track) * np.linalg.norm(gallery))
        if norm > 0 and np.isfinite(norm):
            scores.append(float(track @ gallery) / norm)
    return np.asarray(scores, dtype=np.float64)
