"""Runs whose process is gone, and where a re-run of an interrupted file starts.

:func:`mark_interrupted_runs` marks ``interrupted`` the ``running`` runs whose writer's process is gone (every
command that opens the gallery to write calls it); :func:`resume_point` says where a re-run of an interrupted file
starts and which of its tracks are already logged.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from gallery.db import Database
from gallery.errors import MatchLogError
from gallery.matchlog import HEARTBEAT_S
from gallery.models import Run, Source, Track, owner_gone, utcnow
from gallery.thumbnails import ThumbnailStore

logger = logging.getLogger(__name__)

__all__ = ["STALE_HEARTBEATS", "ResumePoint", "mark_interrupted_runs", "resume_point"]

STALE_HEARTBEATS = 10  # a run on another host is interrupted after this many heartbeats without one


def mark_interrupted_runs(
    db: Database,
    thumbnails: ThumbnailStore | None = None,
    stale_after_s: float = STALE_HEARTBEATS * HEARTBEAT_S,
) -> int:
    """Mark ``interrupted`` every ``running`` run whose process is gone: on this host, its pid is dead or now
    belongs to another process; on any host, no heartbeat for ``stale_after_s`` seconds. Thumbnails of those
    runs that no track references (written just before the kill) are deleted from ``thumbnails``. Returns how
    many runs were marked."""
    if not stale_after_s > 0:
        raise MatchLogError(f"stale_after_s: expected a positive number of seconds, got {stale_after_s}")
    host, cutoff = socket.gethostname()[:255], utcnow() - timedelta(seconds=stale_after_s)
    with db.session() as session:
        gone = [
            (r.id, r.source_id)
            for r in session.scalars(select(Run).where(Run.status == "running"))
            if r.updated_at < cutoff or (r.owner_host == host and owner_gone(r.owner_pid, r.owner_started))
        ]
        stmt = update(Run).where(Run.id.in_([g[0] for g in gone]), Run.status == "running")
        session.execute(stmt.values(status="interrupted", finished_at=utcnow()))
        kept = set(session.scalars(select(Track.thumbnail).where(Track.run_id.in_([g[0] for g in gone]))))
    for run_id, source_id in gone:
        logger.warning("match log: run %d was left running by a process that is gone: interrupted", run_id)
        folder = thumbnails.resolve(f"source{source_id}/run{run_id}") if thumbnails is not None else None
        for path in sorted(folder.iterdir()) if folder is not None and folder.is_dir() else ():
            if f"source{source_id}/run{run_id}/{path.name}" not in kept:
                path.unlink(missing_ok=True)
    return len(gone)


@dataclass(frozen=True)
class ResumePoint:
    """Where a re-run of an interrupted file starts: decode from ``resume_at``; every track that ended by
    ``committed_at`` (stream seconds; None: nothing committed) is logged already, and so are the tracks whose
    (start, end) times are in ``logged`` (those committed later, each matched once)."""

    run_id: int
    resume_at: float
    committed_at: float | None
    logged: tuple[tuple[float, float], ...]


def resume_point(db: Database, source: str, uri: str | None, config_hash: str) -> ResumePoint | None:
    """The resume point of ``source`` when its newest run with ``config_hash`` (same ``uri``) is
    ``interrupted``, else None."""
    with db.session() as session:
        src = session.scalar(select(Source).where(Source.name == source))
        if src is None or src.uri != uri:
            return None
        same = select(Run).where(Run.source_id == src.id, Run.config_hash == config_hash)
        runs = {r.id: r for r in session.scalars(same)}
        last = max(runs.values(), key=lambda r: (r.started_at, r.id), default=None)
        if last is None or last.status != "interrupted":
            return None
        chain, run = [], last
        while run is not None and run.id not in chain:  # the runs this one continues
            chain.append(run.id)
            run = runs.get(run.resumed_from) if run.resumed_from is not None else None
        start = last.resume_at if last.resume_at is not None else (last.last_timestamp or 0.0)
        logged = select(Track.start_time, Track.end_time).where(Track.run_id.in_(chain))
        spans = session.execute(logged.where(Track.end_time >= start - 1e-3)).all()
    return ResumePoint(last.id, max(0.0, start), last.last_timestamp, tuple((a, b) for a, b in spans))
