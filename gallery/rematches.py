"""Rematch passes looked back on: listed (:func:`find_rematches`) and undone, by pass (:func:`undo_rematch`) or by
identity (:func:`undo_identity`). An undo deletes exactly the retroactive matches that were written and never
touches the match events, so the decisions shown are those before the pass."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update

from gallery.db import Database
from gallery.errors import QueryError
from gallery.models import Identity, Rematch, RetroMatch, utcnow
from gallery.queries import Filters, Page, _iso, _page, _refuse
from gallery.records import get_identity
from gallery.store import Gallery

logger = logging.getLogger(__name__)

__all__ = ["Undone", "find_rematches", "undo_identity", "undo_rematch"]


@dataclass(frozen=True)
class Undone:
    """What undoing did to one pass: ``removed`` retroactive matches deleted (naming ``identities``);
    ``undone_at`` set when the pass has none left (None: an undo by identity left some of its other names);
    ``already``: it had been undone before (nothing changed)."""

    rematch_id: int
    cause: str
    removed: int
    identities: list[str]
    undone_at: datetime | None
    already: bool = False

    def as_row(self) -> dict:
        return {
            "rematch_id": self.rematch_id,
            "cause": self.cause,
            "removed": self.removed,
            "identities": self.identities,
            "undone_at": _iso(self.undone_at),
            "already": self.already,
        }


def _named(session, where) -> dict[int, list[str]]:
    """Rematch id -> the names its retroactive matches matching ``where`` give, sorted."""
    out: dict[int, set[str]] = {}
    stmt = select(RetroMatch.rematch_id, Identity.name).join(Identity, Identity.id == RetroMatch.identity_id)
    for rid, name in session.execute(stmt.where(where).distinct()):
        out.setdefault(rid, set()).add(name)
    return {rid: sorted(names) for rid, names in out.items()}


def undo_rematch(gallery: Gallery, rematch_id: int) -> Undone:
    """Delete every retroactive match pass ``rematch_id`` wrote and set its ``undone_at`` (one transaction). An
    unknown id raises :class:`QueryError`; a pass undone before is left as it is (``already``)."""
    with gallery.db.session() as session:
        row = session.get(Rematch, int(rematch_id))
        if row is None:
            raise QueryError(
                f"rematch {rematch_id}: expected the id of a rematch (see 'query rematches'), got none"
            )
        if row.undone_at is not None:
            return Undone(row.id, row.cause, 0, [], row.undone_at, already=True)
        names = _named(session, RetroMatch.rematch_id == row.id).get(row.id, [])
        removed = session.execute(delete(RetroMatch).where(RetroMatch.rematch_id == row.id)).rowcount
        row.undone_at = utcnow()
        done = Undone(row.id, row.cause, removed, names, row.undone_at)
    logger.info("rematch %d undone: %d retroactive matches deleted", done.rematch_id, done.removed)
    return done


def undo_identity(gallery: Gallery, name: str) -> list[Undone]:
    """Delete every retroactive match naming identity ``name`` (one transaction); each pass left without any is
    marked undone. Returns one :class:`Undone` per pass touched (empty: none named ``name``). An unknown name
    raises :class:`gallery.errors.IdentityNotFoundError`."""
    with gallery.db.session() as session:
        identity = get_identity(session, name)
        counts = dict(
            session.execute(
                select(RetroMatch.rematch_id, func.count())
                .where(RetroMatch.identity_id == identity.id)
                .group_by(RetroMatch.rematch_id)
            )
            .tuples()
            .all()
        )
        if not counts:
            return []
        session.execute(delete(RetroMatch).where(RetroMatch.identity_id == identity.id))
        left = set(
            session.scalars(select(RetroMatch.rematch_id).where(RetroMatch.rematch_id.in_(list(counts))))
        )
        now = utcnow()
        empty = [rid for rid in counts if rid not in left]
        if empty:
            session.execute(update(Rematch).where(Rematch.id.in_(empty)).values(undone_at=now))
        causes = dict(
            session.execute(select(Rematch.id, Rematch.cause).where(Rematch.id.in_(list(counts))))
            .tuples()
            .all()
        )
        done = [
            Undone(rid, causes[rid], counts[rid], [identity.name], None if rid in left else now)
            for rid in sorted(counts)
        ]
    logger.info("retroactive matches of %r undone: %d", name, sum(d.removed for d in done))
    return done


def find_rematches(db: Database, f: Filters) -> Page:
    """Rematch passes, newest first: id (what ``rematch --undo ID`` takes), cause, embedder, threshold, the names it
    could give, the enrollment's media, how many tracks it scored and named, how many of those retroactive
    matches are still there (``current``), when it started, finished and was undone. ``since``/``until`` narrow
    the start time."""
    _refuse(f, "rematches", {"since", "until"})
    current = (
        select(func.count()).where(RetroMatch.rematch_id == Rematch.id).correlate(Rematch).scalar_subquery()
    )
    stmt = select(Rematch, current.label("current")).order_by(Rematch.started_at.desc(), Rematch.id.desc())
    if f.since is not None:
        stmt = stmt.where(Rematch.started_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(Rematch.started_at < f.until)
    with db.session() as session:
        return _page(
            session,
            stmt,
            f,
            lambda r: {
                "id": r.Rematch.id,
                "cause": r.Rematch.cause,
                "embedder_id": r.Rematch.embedder_id,
                "threshold": r.Rematch.threshold,
                "identities": r.Rematch.identities,
                "media_ids": r.Rematch.media_ids,
                "source": r.Rematch.source,
                "tracks_scored": r.Rematch.tracks_scored,
                "matches": r.Rematch.matches,
                "current": r.current,
                "started_at": _iso(r.Rematch.started_at),
                "finished_at": _iso(r.Rematch.finished_at),
                "undone_at": _iso(r.Rematch.undone_at),
            },
        )
