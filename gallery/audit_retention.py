"""Reading the audit trail (``query audit``, the admin page) and its retention.

:func:`find_audit` lists entries newest first, filtered by actor, action and time. :func:`cut_older_than` deletes
the entries older than a number of days while keeping the chain verifiable: it first appends an
``audit.retention`` entry whose details name the first entry kept (``first_id``) and that entry's ``prev_hash``
(``first_prev_hash``), the hash of the last entry deleted; :func:`gallery.audit.verify` starts the chain there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, func, select

from gallery.access_models import AuditEntry
from gallery.audit import RETENTION_ACTION, append
from gallery.db import Database
from gallery.errors import QueryError
from gallery.queries import Page, check_page_and_times

logger = logging.getLogger(__name__)

__all__ = ["AuditFilters", "cut_older_than", "find_audit"]


@dataclass(frozen=True)
class AuditFilters:
    """``user``: exact actor; ``action``: exact action, or a prefix ending in ``.`` (``user.``); ``since``/``until``:
    aware datetimes (``since <= at < until``); ``page`` counts from 1."""

    user: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1
    page_size: int = 50

    def __post_init__(self) -> None:
        check_page_and_times(self.page, self.page_size, self.since, self.until)


def _row(entry: AuditEntry) -> dict:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "actor_kind": entry.actor_kind,
        "action": entry.action,
        "objects": entry.objects,
        "details": entry.details,
        "result": entry.result,
        "hash": entry.hash,
    }


def find_audit(db: Database, filters: AuditFilters) -> Page:
    """A page of audit entries, newest first."""
    query = select(AuditEntry)
    if filters.user is not None:
        query = query.where(AuditEntry.actor == filters.user)
    if filters.action is not None:
        if filters.action.endswith("."):
            query = query.where(AuditEntry.action.startswith(filters.action, autoescape=True))
        else:
            query = query.where(AuditEntry.action == filters.action)
    if filters.since is not None:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.at < filters.until)
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    query = query.offset((filters.page - 1) * filters.page_size).limit(filters.page_size + 1)
    with db.session() as session:
        rows = [_row(e) for e in session.scalars(query).all()]
    return Page(rows[: filters.page_size], filters.page, filters.page_size, len(rows) > filters.page_size)


def cut_older_than(
    db: Database, days: float, actor: str, actor_kind: str, head: Path | None | bool = True
) -> int:
    """Delete the audit entries older than ``days`` days (never the newest), after recording the cut as an
    ``audit.retention`` entry by ``actor``; the number deleted."""
    if not days >= 0:
        raise QueryError(f"audit retention: expected 0 or more days, got {days}")
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    with db.session() as session:
        newest = session.scalar(select(func.max(AuditEntry.id)))
        if newest is None:
            return 0
        first_kept = session.scalar(
            select(AuditEntry).where(AuditEntry.at >= cutoff).order_by(AuditEntry.id).limit(1)
        ) or session.get(AuditEntry, newest)
        doomed = session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.id < first_kept.id)
        )
    if not doomed:
        return 0
    details = {
        "days": days,
        "cutoff": cutoff.isoformat(),
        "deleted": doomed,
        "first_id": first_kept.id,
        "first_prev_hash": first_kept.prev_hash,
    }
    append(db, actor, actor_kind, RETENTION_ACTION, [], details, head=head)
    with db.session() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.id < first_kept.id))
    logger.info("audit retention: deleted %d entries older than %g days", doomed, days)
    return doomed
