"""Retroactive matching: past tracks of the match log scored against the gallery as it is now.

:func:`rematch` reads the logged track templates of one embedder (optionally of one source, seen since a time)
in chunks of ``batch_size`` by track id, searches each chunk in the gallery (the same index and open-set rule as
a live decision: the best identity, if it reaches ``threshold``) and writes a :class:`gallery.models.RetroMatch`
for each track whose best identity is one of the ``identities`` asked for (None: any), unless the match log
already decided that identity then, an earlier pass already named it so, or a reviewer rejected that (track,
identity) pair (:mod:`gallery.review_state`: not that person). The match events stay as they were
decided. One transaction per chunk: a pass cut short keeps the chunks it wrote, and a second pass writes only
what the first did not, so running it twice writes nothing the second time. The pass itself is one
:class:`gallery.models.Rematch` row (cause, embedder, threshold, gallery version, the enrollment's identities and
media), created with its first retroactive match; :func:`find_rematches` lists them.

A pass can be undone (:func:`undo_rematch`): exactly the retroactive matches it wrote are deleted and its
``undone_at`` set, in one transaction; the match events were never touched, so every track's current decision is
what it was before the pass. :func:`undo_identity` deletes the retroactive matches naming one person, whichever
passes wrote them (a pass left with none is marked undone). Undoing a pass already undone changes nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import numpy as np
from sqlalchemy import func, insert, select, tuple_, update

from gallery.errors import QueryError
from gallery.models import (
    Identity,
    MatchEvent,
    Media,
    Rematch,
    RetroMatch,
    Source,
    Track,
    from_blob,
    utcnow,
)
from gallery.queries import track_fields
from gallery.records import get_identity, retry_on_conflict
from gallery.review_state import rejected_pairs
from gallery.store import Gallery

logger = logging.getLogger(__name__)

__all__ = [
    "CAUSES",
    "CHUNK",
    "check_scope",
    "RematchReport",
    "RetroHit",
    "media_ids",
    "rematch",
]

CAUSES = ("enroll", "from-track", "rematch")
CHUNK = 2_000  # tracks scored and written per transaction
TOP_K = 3  # candidates kept with each retroactive match


@dataclass(frozen=True)
class RetroHit:
    """One retroactive match written: the track (``ref``; where and when: sighting times with their origin, None
    when unknown, stream seconds within the file or stream, ``logged_at``: when it was logged), who it is now and
    with what score, and what the match log decided then (``was``: an identity name, or ``unknown``)."""

    id: int
    track_pk: int
    source: str
    kind: str
    run_id: int
    track_id: int
    start_time: float
    end_time: float
    logged_at: datetime
    identity: str
    identity_id: int
    score: float
    was: str
    seen_start: datetime | None = None
    seen_end: datetime | None = None
    time_origin: str = "unknown"

    def as_row(self) -> dict:
        return track_fields(self) | {
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "start_time": round(self.start_time, 3),
            "end_time": round(self.end_time, 3),
            "identity": self.identity,
            "score": round(self.score, 4),
            "was": self.was,
        }


@dataclass
class RematchReport:
    """What a pass did: ``rematch_id`` None when it wrote nothing."""

    embedder_id: str
    threshold: float
    rematch_id: int | None = None
    tracks_scored: int = 0
    matches: list[RetroHit] = field(default_factory=list)


def _check(cause: str, threshold: float, batch_size: int) -> None:
    if cause not in CAUSES:
        raise QueryError(f"rematch cause: expected one of {', '.join(CAUSES)}, got {cause!r}")
    if not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise QueryError(f"rematch threshold: expected a cosine in [-1, 1], got {threshold}")
    if not 1 <= batch_size <= 100_000:
        raise QueryError(f"rematch batch size: expected 1..100000, got {batch_size}")


def _checked_scope(session, source: str | None, since: datetime | None) -> int | None:
    """The id of ``source`` (None: any); an unknown source or a naive ``since`` raises :class:`QueryError`."""
    if since is not None and since.tzinfo is None:
        raise QueryError(f"since: expected a time with a timezone, got {since.isoformat()}")
    if source is None:
        return None
    src = session.scalar(select(Source.id).where(Source.name == source))
    if src is None:
        raise QueryError(f"source {source!r}: no such source in the match log")
    return src


def check_scope(gallery: Gallery, source: str | None = None, since: datetime | None = None) -> None:
    """Refuse a rematch scope before anything else is written (``enroll --rematch``): see :func:`rematch`."""
    with gallery.db.session() as session:
        _checked_scope(session, source, since)


def _scope(session, embedder_id: str, identities, source, since) -> tuple[set[int] | None, object]:
    """The identity ids asked for (None: any) and the WHERE clause of the tracks to score."""
    targets = None if identities is None else {get_identity(session, n).id for n in identities}
    where = [Track.embedder_id == embedder_id]
    src = _checked_scope(session, source, since)
    if src is not None:
        where.append(Track.source_id == src)
    if since is not None:
        where.append(Track.seen_start >= since)
    last = session.scalar(select(func.max(Track.id)).where(*where))  # tracks logged after the start: not seen
    return targets, where + [Track.id <= (last or 0)]


def rematch(
    gallery: Gallery,
    embedder_id: str,
    threshold: float,
    *,
    identities: Sequence[str] | None = None,
    source: str | None = None,
    since: datetime | None = None,
    cause: str = "rematch",
    media_ids: Sequence[int] | None = None,
    batch_size: int = CHUNK,
) -> RematchReport:
    """Score the past tracks of ``embedder_id`` against the gallery and write the new retroactive matches (see
    the module). Unknown identity names or source: one-line errors, nothing written."""
    _check(cause, threshold, batch_size)
    db = gallery.db
    with db.session() as session:
        targets, where = _scope(session, embedder_id, identities, source, since)
    report = RematchReport(embedder_id, float(threshold))
    meta = {
        "cause": cause,
        "embedder_id": embedder_id,
        "threshold": float(threshold),
        "gallery_version": gallery.version(),
        "identities": None if identities is None else sorted(set(identities)),
        "media_ids": None if media_ids is None else sorted(int(m) for m in media_ids),
        "source": source,
        "since": since,
    }
    after = 0
    while True:
        with db.session() as session:
            rows = session.execute(
                select(Track.id, Track.dim, Track.template)
                .where(*where, Track.id > after)
                .order_by(Track.id)
                .limit(batch_size)
            ).all()
        if not rows:
            break
        after = rows[-1].id
        report.tracks_scored += len(rows)
        vectors = np.stack([from_blob(r.template, r.dim) for r in rows])
        found = {}
        for row, cands in zip(rows, gallery.search(vectors, TOP_K, embedder_id)):
            if cands and cands[0][2] >= threshold and (targets is None or cands[0][0] in targets):
                found[row.id] = cands
        if found:
            write = partial(_write, db, report.rematch_id, meta, found, len(rows))
            rid, hits = retry_on_conflict(write, "writing retroactive matches")
            report.rematch_id = rid
            report.matches.extend(hits)
        elif report.rematch_id is not None:
            _count(db, report.rematch_id, len(rows), 0)
    if report.rematch_id is not None:
        with db.session() as session:
            session.execute(
                update(Rematch).where(Rematch.id == report.rematch_id).values(finished_at=utcnow())
            )
    logger.info(
        "rematch %s of %s: %d tracks scored at %.4f, %d retroactive matches",
        cause,
        embedder_id,
        report.tracks_scored,
        threshold,
        len(report.matches),
    )
    return report


def _count(db, rematch_id: int, scored: int, matched: int) -> None:
    with db.session() as session:
        _bump(session, rematch_id, scored, matched)


def _bump(session, rematch_id: int, scored: int, matched: int) -> None:
    stmt = update(Rematch).where(Rematch.id == rematch_id)
    session.execute(
        stmt.values(tracks_scored=Rematch.tracks_scored + scored, matches=Rematch.matches + matched)
    )


def _write(db, rematch_id: int | None, meta: dict, found: dict, scored: int) -> tuple[int | None, list]:
    """One transaction: the retroactive matches of one chunk that are new (see the module)."""
    pks = list(found)
    with db.session() as session:
        live = {
            r.track_pk: (r.identity_id if r.decision == "match" else None)
            for r in session.execute(
                select(MatchEvent.track_pk, MatchEvent.decision, MatchEvent.identity_id).where(
                    MatchEvent.track_pk.in_(pks)
                )
            )
        }
        pairs = [(pk, cands[0][0]) for pk, cands in found.items()]
        named = set(
            session.execute(
                select(RetroMatch.track_pk, RetroMatch.identity_id).where(
                    tuple_(RetroMatch.track_pk, RetroMatch.identity_id).in_(pairs)
                )
            )
            .tuples()
            .all()
        )
        alive = set(session.scalars(select(Identity.id).where(Identity.id.in_({i for _, i in pairs}))))
        rejected = rejected_pairs(session, pks)  # a reviewer said: not that person
        new = [
            (pk, i)
            for pk, i in pairs
            if live.get(pk) != i and (pk, i) not in named and (pk, i) not in rejected and i in alive
        ]
        if not new:
            if rematch_id is not None:
                _bump(session, rematch_id, scored, 0)
            return rematch_id, []
        if rematch_id is None:
            pass_row = Rematch(**meta, tracks_scored=0, matches=0)
            session.add(pass_row)
            session.flush()
            rematch_id = pass_row.id
        _bump(session, rematch_id, scored, len(new))
        tracks = {
            r.id: r
            for r in session.execute(
                select(Track.id, Track.source_id, Track.run_id, Track.track_id, Track.start_time)
                .add_columns(Track.end_time, Track.created_at, Source.name, Source.kind)
                .add_columns(Track.seen_start, Track.seen_end, Track.time_origin)
                .join(Source, Source.id == Track.source_id)
                .where(Track.id.in_([pk for pk, _ in new]))
            )
        }
        names = dict(
            session.execute(select(Identity.id, Identity.name).where(Identity.id.in_(alive))).tuples().all()
        )
        now = utcnow()
        rows = [
            {
                "track_pk": pk,
                "source_id": tracks[pk].source_id,
                "identity_id": ident,
                "rematch_id": rematch_id,
                "score": float(found[pk][0][2]),
                "threshold": meta["threshold"],
                "candidates": [{"identity_id": i, "name": n, "score": float(s)} for i, n, s in found[pk]],
                "at": now,
            }
            for pk, ident in new
        ]
        ids = session.scalars(
            insert(RetroMatch).returning(RetroMatch.id, sort_by_parameter_order=True), rows
        ).all()
        was = dict(
            session.execute(
                select(MatchEvent.track_pk, Identity.name)
                .join(Identity, Identity.id == MatchEvent.identity_id)
                .where(MatchEvent.track_pk.in_([pk for pk, _ in new]), MatchEvent.decision == "match")
            )
            .tuples()
            .all()
        )
    hits = [
        RetroHit(
            rid,
            pk,
            tracks[pk].name,
            tracks[pk].kind,
            tracks[pk].run_id,
            tracks[pk].track_id,
            tracks[pk].start_time,
            tracks[pk].end_time,
            tracks[pk].created_at,
            names[ident],
            ident,
            float(found[pk][0][2]),
            was.get(pk, "unknown"),
            tracks[pk].seen_start,
            tracks[pk].seen_end,
            tracks[pk].time_origin,
        )
        for rid, (pk, ident) in zip(ids, new)
    ]
    return rematch_id, hits


def media_ids(gallery: Gallery, embedder_id: str, hashes: Sequence[str]) -> list[int]:
    """The ids of the media of ``embedder_id`` with these content hashes (an enrollment's new media)."""
    if not hashes:
        return []
    with gallery.db.session() as session:
        stmt = select(Media.id).where(Media.embedder_id == embedder_id, Media.content_hash.in_(list(hashes)))
        return sorted(session.scalars(stmt))
