"""Runs whose process is gone, where a re-run of an interrupted file starts, and one processing per file.

:func:`mark_interrupted_runs` marks ``interrupted`` the ``running`` runs whose writer's process is gone (every
command that opens the gallery to write calls it); :func:`resume_point` says where a re-run of an interrupted file
starts and which of its tracks are already logged.

A file is processed once: its source is found by content (:mod:`gallery.content`); :func:`newest_run` says whether
it is done (its newest run ``finished``) or being processed (``running``), and :func:`replace_runs`, once a run of
it finished, drops what every other run of it logged (tracks, events, retroactive matches, thumbnails) and marks
those runs ``replaced``: a file source keeps the tracks of one processing, its newest finished one and the
interrupted runs that one continues.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from gallery.content import find_source
from gallery.db import Database
from gallery.errors import MatchLogError
from gallery.matchlog import HEARTBEAT_S
from gallery.models import MatchEvent, RetroMatch, Run, Source, Track, from_blob, owner_gone, utcnow
from gallery.thumbnails import ThumbnailStore
from gallery.track_files import FILE_COLUMNS, track_files
from gallery.track_index import TrackIndexes

logger = logging.getLogger(__name__)

__all__ = ["REPLACED", "STALE_HEARTBEATS", "LoggedRun", "LoggedTrack", "ResumePoint", "logged_tracks"]
__all__ += ["mark_interrupted_runs", "newest_run", "replace_runs", "resume_point"]

REPLACED = (
    "replaced"  # the status of a file's run whose tracks a later finished run of the same file replaced
)

STALE_HEARTBEATS = 10  # a run on another host is interrupted after this many heartbeats without one


def mark_interrupted_runs(
    db: Database,
    thumbnails: ThumbnailStore | None = None,
    stale_after_s: float = STALE_HEARTBEATS * HEARTBEAT_S,
) -> int:
    """Mark ``interrupted`` every ``running`` run whose process is gone: on this host, its pid is dead or now
    belongs to another process; on any host, no heartbeat for ``stale_after_s`` seconds. Thumbnails and snapshots
    of those runs that no track references (written just before the kill) are deleted from ``thumbnails``. Returns how
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
        files = select(*FILE_COLUMNS).where(Track.run_id.in_([g[0] for g in gone]))
        kept = set(track_files(session.execute(files)))
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


def _chain(runs: Mapping[int, Run], last: Run) -> list[int]:
    """``last`` and the runs it continues (``resumed_from``), newest first."""
    chain, run = [], last
    while run is not None and run.id not in chain:
        chain.append(run.id)
        run = runs.get(run.resumed_from) if run.resumed_from is not None else None
    return chain


def _runs_of(session: Session, source_id: int) -> dict[int, Run]:
    """The runs of a source that hold its tracks (every one but the replaced)."""
    live = select(Run).where(Run.source_id == source_id, Run.status != REPLACED)
    return {r.id: r for r in session.scalars(live)}


def _newest(runs: Mapping[int, Run]) -> Run | None:
    return max(runs.values(), key=lambda r: (r.started_at, r.id), default=None)


def resume_point(
    db: Database, source: str, uri: str | None, config_hash: str, content_key: str | None = None
) -> ResumePoint | None:
    """The resume point of ``source`` when its newest run with ``config_hash`` is ``interrupted``, else None.

    The source is found by ``content_key`` first (the same content under any path or name resumes), else by name
    (then, for a source known by name only, the same ``uri``)."""
    with db.session() as session:
        src = find_source(session, source, content_key, uri)
        if src is None or (src.content_key is None and src.uri != uri):
            return None
        runs = {i: r for i, r in _runs_of(session, src.id).items() if r.config_hash == config_hash}
        last = _newest(runs)
        if last is None or last.status != "interrupted":
            return None
        chain = _chain(runs, last)
        start = last.resume_at if last.resume_at is not None else (last.last_timestamp or 0.0)
        logged = select(Track.start_time, Track.end_time).where(Track.run_id.in_(chain))
        spans = session.execute(logged.where(Track.end_time >= start - 1e-3)).all()
    return ResumePoint(last.id, max(0.0, start), last.last_timestamp, tuple((a, b) for a, b in spans))


@dataclass(frozen=True)
class LoggedRun:
    """The newest run of a source (replaced runs aside): ``source`` (its name, the first path it was logged
    under), ``run_id``, ``status``, ``path`` it read, when it started and finished, ``chain`` (this run and the
    interrupted runs it continues, newest first), how many ``tracks`` they logged, and its owner (``host``,
    ``pid``)."""

    source_id: int
    source: str
    run_id: int
    status: str
    path: str | None
    started_at: datetime
    finished_at: datetime | None
    chain: tuple[int, ...]
    tracks: int
    host: str | None
    pid: int | None


def newest_run(db: Database, name: str, uri: str | None, content_key: str | None) -> LoggedRun | None:
    """The newest run of the source of a file (found as :func:`gallery.content.find_source` finds it), whatever
    its configuration; None when the file was never logged."""
    with db.session() as session:
        src = find_source(session, name, content_key, uri)
        runs = {} if src is None else _runs_of(session, src.id)
        last = _newest(runs)
        if last is None:
            return None
        chain = tuple(_chain(runs, last))
        count = select(func.count()).select_from(Track).where(Track.run_id.in_(chain))
        return LoggedRun(
            src.id,
            src.name,
            last.id,
            last.status,
            last.path,
            last.started_at,
            last.finished_at,
            chain,
            session.scalar(count) or 0,
            last.owner_host,
            last.owner_pid,
        )


@dataclass(frozen=True)
class LoggedTrack:
    """One logged track with its logged decision, as the process command shows it: ``run_id``/``track_id`` (its
    reference), stream times, counts, the template ``[D]`` float32, ``candidates`` (dicts with ``identity_id``,
    ``name``, ``score``, best first), ``decision``, ``threshold`` and the sighting times (None: unknown)."""

    run_id: int
    track_id: int
    start_time: float
    end_time: float
    frames: int
    crops_embedded: int
    template: object
    candidates: list
    decision: str
    threshold: float
    seen_start: datetime | None
    seen_end: datetime | None


def logged_tracks(db: Database, run_ids: tuple[int, ...] | list[int]) -> list[LoggedTrack]:
    """The tracks of runs ``run_ids`` with their logged decisions, by start time."""
    stmt = (
        select(Track, MatchEvent)
        .join(MatchEvent, MatchEvent.track_pk == Track.id)
        .where(Track.run_id.in_(list(run_ids)))
        .order_by(Track.start_time, Track.run_id, Track.track_id)
    )
    with db.session() as session:
        return [
            LoggedTrack(
                t.run_id,
                t.track_id,
                t.start_time,
                t.end_time,
                t.frames,
                t.crops_embedded,
                from_blob(t.template, t.dim),
                list(e.candidates or []),
                e.decision,
                e.threshold,
                t.seen_start,
                t.seen_end,
            )
            for t, e in session.execute(stmt).all()
        ]


def replace_runs(
    db: Database,
    run_id: int,
    thumbnails: ThumbnailStore | None = None,
    track_index: TrackIndexes | None = None,
) -> list[int]:
    """Once run ``run_id`` of a file finished, every other run of its source that it does not continue and that
    is not ``running`` is marked ``replaced`` and loses its tracks (with their match events and retroactive
    matches), in one transaction; then their thumbnails and snapshots are deleted from ``thumbnails`` and the
    tracks leave ``track_index``. Returns the replaced run ids (none: nothing to replace; calling it again is a no-op).

    Replacements of one source are serialized (its row is written first: a row lock on PostgreSQL, the write lock
    on SQLite), so two runs of one file finishing at once keep one processing: the second to get there finds
    itself replaced and does nothing."""
    with db.session() as session:
        owner = select(Run.source_id).where(Run.id == run_id).scalar_subquery()
        session.execute(update(Source).where(Source.id == owner).values(kind=Source.kind))  # the lock
        run = session.get(Run, run_id)
        if run is not None and run.status == REPLACED:
            logger.info("match log: run %d was replaced meanwhile by another run of its file", run_id)
            return []
        if run is None or run.status != "finished":
            raise MatchLogError(
                f"run {run_id}: expected a finished run to replace the others of its source, got "
                f"{'no run' if run is None else run.status}"
            )
        source_id = run.source_id
        runs = _runs_of(session, source_id)
        kept = set(_chain(runs, run))
        old = [i for i, r in runs.items() if i not in kept and r.status != "running"]
        if not old:
            return []
        files = select(Track.id, *FILE_COLUMNS).where(Track.run_id.in_(old))
        tracks = session.execute(files).all()
        pks = select(Track.id).where(Track.run_id.in_(old))
        session.execute(delete(RetroMatch).where(RetroMatch.track_pk.in_(pks)))
        session.execute(delete(MatchEvent).where(MatchEvent.track_pk.in_(pks)))
        session.execute(delete(Track).where(Track.run_id.in_(old)))
        marked = update(Run).where(Run.id.in_(old), Run.status != "running")
        session.execute(marked.values(status=REPLACED, updated_at=utcnow()))
    if thumbnails is not None:
        paths = track_files(files for _, *files in tracks)
        _drop_thumbnails(thumbnails, paths, [(source_id, i) for i in old])
    if track_index is not None and tracks:
        track_index.note_removed([pk for pk, *_ in tracks])
    logger.info(
        "match log: run %d replaced runs %s of its source (%d tracks deleted)",
        run_id,
        ", ".join(map(str, sorted(old))),
        len(tracks),
    )
    return sorted(old)


def _drop_thumbnails(store: ThumbnailStore, paths: list[str], runs: list[tuple[int, int]]) -> None:
    """Delete the thumbnails at ``paths``, then the folders of ``runs`` (source id, run id) and what is left in
    them (a killed run's unreferenced crops). Their rows are gone already: a file that cannot be removed is
    logged and left, never an error."""
    try:
        for rel in paths:
            store.delete(rel)
        for source_id, run_id in runs:
            folder = store.resolve(f"source{source_id}/run{run_id}")
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                path.unlink(missing_ok=True)
            if folder.is_dir():
                folder.rmdir()
    except OSError as exc:
        logger.warning("thumbnails of replaced runs not all deleted: %s", exc)
