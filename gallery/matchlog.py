"""The match log: what the pipeline saw and decided, written in batches, one transaction per batch.

A :class:`MatchLogWriter` registers a source and a run, buffers :class:`TrackRecord` rows (each a track with
its match event) and writes them ``batch_size`` at a time: thumbnails first, then the tracks, their events and
the run's progress in one transaction. A crash loses at most the unwritten batch and never leaves half a track
(a track and its event commit together); the run stays ``running`` with the progress of the last batch. A
match whose identity was removed meanwhile is kept with its candidates but without the identity link.

Runs heartbeat: a writer stores its owner (host, pid, process start), refreshes ``updated_at`` every ``heartbeat_s``
and commits its progress with the queued tracks that often (:meth:`MatchLogWriter.progress`); a run another
command has marked ``interrupted`` (:mod:`gallery.runs`) is never written to again, except by a writer told to
continue it (``continue_run``: the same pipeline taking its own run back after the process writing it died).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import delete, insert, select, update

from gallery.config import GalleryConfig
from gallery.content import find_source, new_source_name
from gallery.db import Database, storage_error
from gallery.errors import MatchLogError, StorageError
from gallery.models import (
    Identity,
    MatchEvent,
    Run,
    Source,
    Track,
    process_owner,
    utcnow,
)
from gallery.records import retry_on_conflict
from gallery.scenes import labelled_scene, snapshot_path
from gallery.thumbnails import ThumbnailStore
from gallery.track_files import FILE_COLUMNS, delete_track_files
from gallery.track_index import TrackIndexes
from gallery.track_record import (
    DECISIONS,
    TIME_ORIGINS,
    TrackRecord,
    candidate_row,
    checked,
    event_row,
    track_row,
)

logger = logging.getLogger(__name__)

__all__ = ["DECISIONS", "HEARTBEAT_S", "SOURCE_KINDS", "TIME_ORIGINS", "MatchLogWriter", "TrackRecord"]
__all__ += ["config_hash", "process_owner", "purge_older_than"]

SOURCE_KINDS = ("file", "camera")
RUN_STATUSES = ("running", "finished", "failed", "interrupted")
HEARTBEAT_S = 5.0  # seconds between a running run's heartbeats (liveness and committed progress)


class MatchLogWriter:
    """Writes one run of one source. Use as a context manager or call :meth:`close`.

    ``source``: a unique name (file path or camera name) registered on first use, with ``kind`` ``"file"`` or
    ``"camera"`` and an optional ``uri`` (a file's: the run's ``path``); ``content_key``: a file's
    :func:`gallery.content.content_key`, by which its source is found first (the same content under another path
    is the same source, whose name stays the first path it was logged under); ``config_hash``: identifies the
    pipeline configuration of the run;
    ``thumbnails``: where best crops and context snapshots (:mod:`gallery.scenes`) go; None means the default store
    beside a SQLite database (``<db name>_thumbnails``; a server database has none unless given);
    ``keep_thumbnails=False``: neither.
    ``continue_run``: the id of a run of this source with the same ``config_hash``, ``running`` or
    ``interrupted``, to go on writing instead of starting a new one (e.g. after the process writing it died): it
    is marked ``running`` again with this process as its owner, and its logged tracks count as recorded
    (:meth:`logged`; recording one again is refused). ``track_index``: told of every batch once committed.
    ``threshold``/``threshold_origin``: the open-set threshold in force and where it comes from;
    ``recorded_at``/``time_origin``: the wall clock of stream time 0 and its origin; stored on the run."""

    def __init__(
        self,
        db: Database,
        *,
        source: str,
        config_hash: str,
        kind: str = "file",
        uri: str | None = None,
        content_key: str | None = None,
        thumbnails: ThumbnailStore | None = None,
        keep_thumbnails: bool = True,
        batch_size: int = 32,
        heartbeat_s: float = HEARTBEAT_S,
        resumed_from: int | None = None,
        continue_run: int | None = None,
        track_index: TrackIndexes | None = None,
        threshold: float | None = None,
        threshold_origin: str | None = None,
        recorded_at: datetime | None = None,
        time_origin: str | None = None,
    ) -> None:
        if kind not in SOURCE_KINDS:
            raise MatchLogError(f"source kind: expected one of {SOURCE_KINDS}, got {kind!r}")
        if not source or len(source) > 500:
            raise MatchLogError(f"source name: expected 1-500 characters, got {len(source)}")
        if batch_size < 1:
            raise MatchLogError(f"batch_size: expected at least 1, got {batch_size}")
        if not 0 < heartbeat_s <= 3600:
            raise MatchLogError(f"heartbeat_s: expected 0 < seconds <= 3600, got {heartbeat_s}")
        if thumbnails is None and keep_thumbnails:
            thumbnails = ThumbnailStore.for_database(db, GalleryConfig())
        self.db, self.batch_size, self.track_index = db, batch_size, track_index
        self.thumbnails = thumbnails if keep_thumbnails else None
        self._pending: list[TrackRecord] = []
        self._seen: set[int] = set()
        self._progress: tuple[int, float | None, float | None] = (0, None, None)
        self.heartbeat_s = heartbeat_s
        self._committed = time.monotonic()
        self.closed = False
        owner = dict(zip(("owner_host", "owner_pid", "owner_started"), process_owner()))
        facts = {"threshold": threshold, "threshold_origin": threshold_origin}
        facts |= {"recorded_at": recorded_at, "time_origin": time_origin}

        def register() -> tuple[int, int]:  # the source row may be created by another command at once
            with db.session() as session:
                src = find_source(session, source, content_key, uri)
                if continue_run is not None:
                    run_id = self._take_over(session, src, continue_run, config_hash, owner)
                    return src.id, run_id
                if src is None:
                    name = new_source_name(session, source, content_key)
                    src = Source(name=name, kind=kind, uri=uri, content_key=content_key)
                    session.add(src)
                    session.flush()
                elif content_key is not None and src.content_key is None:  # logged before content keys
                    src.content_key = content_key
                run = Run(
                    source_id=src.id,
                    config_hash=config_hash,
                    status="running",
                    resumed_from=resumed_from,
                    path=uri if kind == "file" else None,
                    **owner,
                    **facts,
                )
                session.add(run)
                session.flush()
                return src.id, run.id

        self.source_id, self.run_id = retry_on_conflict(register, f"registering source {source!r}")
        self._beat = threading.Event()
        threading.Thread(target=self._heartbeat, name=f"heartbeat-run{self.run_id}", daemon=True).start()
        if continue_run is None:
            logger.info("match log: run %d of source %r started", self.run_id, source)
        else:
            logger.info(
                "match log: run %d of source %r continued (%d tracks logged)",
                self.run_id,
                source,
                len(self._seen),
            )

    def _take_over(self, session, src: Source | None, run_id: int, config_hash: str, owner: dict) -> int:
        """Mark run ``run_id`` of ``src`` running again under this process; load its logged tracks and progress."""
        run = session.get(Run, run_id)
        if src is None or run is None or run.source_id != src.id or run.config_hash != config_hash:
            raise MatchLogError(
                f"continue_run {run_id}: expected a run of source {src.name if src else None!r} with config "
                f"{config_hash}, got {'no run' if run is None else f'one of source id {run.source_id}'}"
            )
        if run.status not in ("running", "interrupted"):
            raise MatchLogError(
                f"continue_run {run_id}: expected it running or interrupted, got {run.status}"
            )
        for key, value in owner.items():
            setattr(run, key, value)
        run.status, run.finished_at, run.updated_at = "running", None, utcnow()
        self._seen = set(session.scalars(select(Track.track_id).where(Track.run_id == run_id)))
        self._progress = (run.frames_done or 0, run.last_timestamp, run.resume_at)
        return run.id

    def _heartbeat(self) -> None:
        """Refresh ``updated_at`` every ``heartbeat_s`` until closed (liveness for other hosts)."""
        failing = False
        while not self._beat.wait(self.heartbeat_s):
            try:
                with self.db.session() as session:
                    alive = update(Run).where(Run.id == self.run_id, Run.status == "running")
                    session.execute(alive.values(updated_at=utcnow()))
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
                if not failing:  # said once per outage, not every beat
                    logger.warning("match log: heartbeat of run %d failed (retrying): %s", self.run_id, exc)
                failing = True
                continue
            if failing:
                logger.warning("match log: heartbeat of run %d back", self.run_id)
            failing = False

    def logged(self, track_id: int) -> bool:
        """True when ``track_id`` was recorded in this run (by this writer, or before it when continuing a run)."""
        return track_id in self._seen

    @property
    def top_track_id(self) -> int:
        """The highest track id recorded in this run (0 when none)."""
        return max(self._seen, default=0)

    def record(self, rec: TrackRecord) -> None:
        """Queue one track and its decision; writes a batch when ``batch_size`` are queued."""
        if self.closed:
            raise MatchLogError(f"run {self.run_id}: expected an open writer, got a closed one")
        checked(rec)
        if rec.track_id in self._seen:
            raise MatchLogError(f"run {self.run_id}: track {rec.track_id} recorded twice")
        self._seen.add(rec.track_id)
        self._pending.append(rec)
        if len(self._pending) >= self.batch_size:
            self.flush()

    def progress(
        self, frames_done: int, last_timestamp: float | None, resume_at: float | None = None
    ) -> None:
        """Note how far the run got: every track that ended by stream time ``last_timestamp`` has been recorded,
        and a re-run that decodes from ``resume_at`` (default ``last_timestamp``) sees every track still open.
        Saved with the next batch, and committed with the queued tracks when ``heartbeat_s`` has passed since
        the last commit."""
        last = None if last_timestamp is None else float(last_timestamp)
        resume = last if resume_at is None else min(float(resume_at), last if last is not None else resume_at)
        self._progress = (int(frames_done), last, resume)
        if not self.closed and time.monotonic() - self._committed >= self.heartbeat_s:
            self.flush()

    def _thumb_path(self, track_id: int) -> str:
        return f"source{self.source_id}/run{self.run_id}/track{track_id}.jpg"

    def media_paths(self, track_id: int) -> tuple[str | None, str | None]:
        """The store-relative paths that track ``track_id``'s best crop and context snapshot are (or will be)
        written to, ``(None, None)`` when this writer keeps no thumbnails."""
        if self.thumbnails is None:
            return None, None
        thumb = self._thumb_path(track_id)
        return thumb, snapshot_path(thumb)

    def flush(self) -> int:
        """Write the queued tracks (thumbnails, then tracks + events + progress in one transaction)."""
        batch, self._pending = self._pending, []
        written: list[str] = []
        try:
            rows = []
            for rec in batch:
                thumb = snap = None
                if rec.thumbnail is not None and self.thumbnails is not None:
                    thumb = self._thumb_path(rec.track_id)
                    self._write_thumbnail(thumb, rec.thumbnail)
                    written.append(thumb)
                if rec.scene is not None and self.thumbnails is not None:
                    snap = snapshot_path(self._thumb_path(rec.track_id))
                    self._write_thumbnail(snap, labelled_scene(rec, self.run_id), "snapshot")
                    written.append(snap)
                rows.append((rec, thumb, snap))
            self._write(rows)
        except BaseException:
            for rel in written:
                self.thumbnails.delete(rel)
            self._pending = batch + self._pending  # kept: progress is stored only with the tracks up to it
            raise
        return len(batch)

    def _write_thumbnail(self, rel: str, image: np.ndarray, what: str = "thumbnail") -> None:
        """One thumbnail (or snapshot) file; a full or read-only disk is a :class:`StorageError` naming the file."""
        try:
            self.thumbnails.write(rel, image)
        except OSError as exc:
            mapped = storage_error(exc, f"{what} {exc.filename or rel}")
            if mapped is None:
                raise
            raise mapped from exc

    def _write(self, rows: list[tuple[TrackRecord, str | None, str | None]]) -> None:
        now = utcnow()
        frames, last, resume = self._progress
        with self.db.session() as session:
            if rows:
                fixed = {"run_id": self.run_id, "source_id": self.source_id}
                track_pks = session.scalars(
                    insert(Track).returning(Track.id, sort_by_parameter_order=True),
                    [fixed | track_row(r, thumb, now, snap) for r, thumb, snap in rows],
                ).all()
                matched = {
                    candidate_row(r.candidates[0])["identity_id"] for r, *_ in rows if r.decision == "match"
                }
                known = (
                    set(session.scalars(select(Identity.id).where(Identity.id.in_(matched))))
                    if matched
                    else ()
                )
                events = [
                    {"track_pk": pk, "source_id": self.source_id} | event_row(r, known, now)
                    for pk, (r, *_) in zip(track_pks, rows)
                ]
                session.execute(insert(MatchEvent), events)
            still = update(Run).where(Run.id == self.run_id, Run.status == "running")
            done = session.execute(
                still.values(frames_done=frames, last_timestamp=last, resume_at=resume, updated_at=now)
            )
            if done.rowcount == 0:  # rolls the batch back: another command took this run over
                raise MatchLogError(f"run {self.run_id}: expected it running, got it marked interrupted")
        self._committed = time.monotonic()
        if self.track_index is not None and rows:
            self.track_index.note_logged(track_pks, [r for r, *_ in rows])

    def close(self, status: str = "finished") -> None:
        """Write what is queued and mark the run ``status``: ``finished``, ``failed`` or ``interrupted`` (stopped
        by its storage, see :class:`gallery.errors.StorageError`: a re-run resumes it).

        A closing write that fails never leaves progress ahead of the tracks: the run keeps the progress of its
        last commit and is marked ``interrupted`` (a storage error) or ``failed``, then the failure is raised;
        on an error path (``failed``, ``interrupted``) it is logged instead, so that the caller's error is the
        one reported (a run that cannot even be marked stays ``running`` until the next command marks it
        ``interrupted``)."""
        if self.closed:
            return
        if status not in RUN_STATUSES[1:]:
            raise MatchLogError(f"run status: expected one of {RUN_STATUSES[1:]}, got {status!r}")
        self._beat.set()
        failure: Exception | None = None
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - raised below, or the caller's error is the one reported
            failure = exc
        self.closed = True
        raising = failure is not None and status == "finished"
        if raising:
            status = "interrupted" if isinstance(failure, StorageError) else "failed"
        try:
            with self.db.session() as session:
                done = update(Run).where(Run.id == self.run_id, Run.status == "running")
                session.execute(done.values(status=status, finished_at=utcnow(), updated_at=utcnow()))
        except Exception as exc:
            if failure is None and status == "finished":
                raise
            logger.info("match log: run %d left running (marking it %s failed: %s)", self.run_id, status, exc)
        if failure is not None:
            logger.info(
                "match log: run %d: %d queued tracks not written (%s)",
                self.run_id,
                len(self._pending),
                failure,
            )
            if raising:
                raise failure
        logger.info("match log: run %d %s", self.run_id, status)

    def __enter__(self) -> MatchLogWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("failed" if exc_type is not None else "finished")


def config_hash(text: str) -> str:
    """A short stable hash of a configuration's canonical text (for ``MatchLogWriter(config_hash=...)``)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def purge_older_than(
    db: Database,
    days: float,
    thumbnails: ThumbnailStore | None = None,
    now: datetime | None = None,
    track_index: TrackIndexes | None = None,
) -> int:
    """Delete match events and tracks (with their files, :mod:`gallery.track_files`) older than ``days`` (0:
    everything older than now); returns the tracks deleted.

    Rows go in one transaction; after it commits thumbnail files are removed and the tracks leave ``track_index``."""
    if not days >= 0:
        raise MatchLogError(f"retention: expected 0 or more days, got {days}")
    try:
        cutoff = (now or utcnow()) - timedelta(days=days)
    except OverflowError:  # older than the calendar reaches: nothing is that old
        return 0
    with db.session() as session:
        old = session.execute(select(Track.id, *FILE_COLUMNS).where(Track.created_at < cutoff)).all()
        session.execute(
            delete(MatchEvent).where(
                MatchEvent.track_pk.in_(select(Track.id).where(Track.created_at < cutoff))
            )
        )
        count = session.execute(delete(Track).where(Track.created_at < cutoff)).rowcount
    if thumbnails is not None:
        delete_track_files(thumbnails, (files for _, *files in old))
    if track_index is not None:
        track_index.note_removed([pk for pk, *_ in old])
    logger.info("retention: deleted %d tracks older than %s", count, cutoff.isoformat())
    return count
