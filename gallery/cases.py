"""Evidence cases: listed with the recording segments they hold, and closed.

A case is opened by an evidence export (:mod:`pipeline.services.evidence` writes its ``cases`` row and, for camera
clips, its ``case_holds``). While a case is open (``closed_at`` unset) retention never deletes a segment it holds
(:func:`gallery.recordings.apply_retention`); :func:`close_case` releases them (the holds stay as the record of what
the case used).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import func, select, update

from gallery.db import Database
from gallery.errors import GalleryError
from gallery.evidence_models import Case, CaseHold
from gallery.queries import Filters, Page, _page, _refuse

logger = logging.getLogger(__name__)

__all__ = ["CaseError", "close_case", "find_cases"]


class CaseError(GalleryError):
    """A case that cannot be closed: unknown, or closed already."""


def close_case(db: Database, name: str, now: datetime | None = None) -> datetime:
    """Close the open case ``name``; returns its ``closed_at``. Unknown or already closed: :class:`CaseError`."""
    now = now or datetime.now(timezone.utc)
    with db.session() as s:
        row = s.execute(select(Case.id, Case.closed_at).where(Case.name == name)).first()
        if row is None:
            raise CaseError(f"case {name!r}: not found; expected a name of 'query cases'")
        if row.closed_at is not None:
            raise CaseError(f"case {name!r}: closed already at {row.closed_at.isoformat()}")
        done = s.execute(
            update(Case).where(Case.id == row.id, Case.closed_at.is_(None)).values(closed_at=now)
        ).rowcount
        if not done:
            raise CaseError(f"case {name!r}: closed meanwhile by another process")
    logger.info("case %r closed: the recordings it held are released", name)
    return now


def find_cases(db: Database, f: Filters) -> Page:
    """Cases, newest first: name, opened and closed (None: open) times, operator, note and how many recording
    segments it holds. ``since``/``until`` filter by the time it was opened."""
    _refuse(f, "cases", {"since", "until"})
    held = (
        select(func.count())
        .select_from(CaseHold)
        .where(CaseHold.case_id == Case.id)
        .correlate(Case)
        .scalar_subquery()
    )
    stmt = select(Case, held.label("held"))
    if f.since is not None:
        stmt = stmt.where(Case.opened_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(Case.opened_at < f.until)

    def row(r) -> dict:
        c = r[0]
        return {
            "name": c.name,
            "opened_at": c.opened_at.isoformat(),
            "closed_at": c.closed_at.isoformat() if c.closed_at else None,
            "operator": c.operator,
            "note": c.note,
            "held_segments": int(r[1]),
        }

    with db.session() as s:
        return _page(s, stmt.order_by(Case.opened_at.desc(), Case.id.desc()), f, row)
