"""The index of camera recordings in SQL and their files: segments, the windows they cover, retention.

A segment is one MP4 file under the recording store (:class:`RecordingStore`, store-relative POSIX paths like
``gate/2026-12-06/101500.123456.mp4``; folders 0700, files 0600). Its row (:class:`gallery.evidence_models.Recording`)
is added with status ``recording`` before the file exists, and becomes ``done`` with ``ended_at`` and ``size``
once the file is complete under its final name: only ``done`` rows are listed or served. Within a segment the
first frame has pts 0 and its wall clock is ``started_at``: a frame at pts ``t`` seconds was seen at
``started_at + t`` (:func:`wall_at`, :func:`pts_at`).

Retention (:func:`apply_retention`): segments that ended more than ``retention_days`` ago, then the oldest while
all segments together exceed ``max_bytes``; never a segment an open case holds (``Case.closed_at`` unset). A row
is deleted before its file: a crash in between leaves a file without a row, which recovery removes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import and_, delete, exists, func, select, update

from gallery.config import GalleryConfig
from gallery.db import Database, storage_error
from gallery.errors import GalleryError
from gallery.evidence_models import Case, CaseHold, Recording
from gallery.queries import Filters, Page, _page, _refuse
from gallery.thumbnails import PART, ThumbnailStore

logger = logging.getLogger(__name__)

__all__ = [
    "RecordingError",
    "RecordingStore",
    "Segment",
    "add_segment",
    "apply_retention",
    "close_segment",
    "discard_segment",
    "find_recordings",
    "open_segments",
    "pts_at",
    "segments_for",
    "wall_at",
]

DONE, RECORDING = "done", "recording"


class RecordingError(GalleryError):
    """A recording folder that cannot be written, or a segment that cannot be stored."""


@dataclass(frozen=True)
class Segment:
    """One finished segment: its row id, camera, wall-clock span (aware UTC), store-relative path, size and the
    privacy masks in force while it was recorded (``[{"name", "points": [[x, y], ...]}]``, fractions of the frame;
    None: none)."""

    id: int
    camera: str
    started_at: datetime
    ended_at: datetime
    path: str
    size: int
    masks: list | None = None


def wall_at(segment: Segment, pts_s: float) -> datetime:
    """The wall clock of the frame at ``pts_s`` seconds within ``segment``'s file."""
    return segment.started_at + timedelta(seconds=pts_s)


def pts_at(segment: Segment, wall: datetime) -> float:
    """The time (s) within ``segment``'s file of wall-clock moment ``wall`` (aware)."""
    return (wall - segment.started_at).total_seconds()


class RecordingStore(ThumbnailStore):
    """Segment files under ``root``: the thumbnail store's path and permission rules (0700 folders, 0600 files)."""

    @classmethod
    def for_recordings(
        cls, db: Database, folder: str | None, gallery: GalleryConfig
    ) -> RecordingStore | None:
        """``folder``, else ``<storage dir>/<db stem>_recordings`` beside the database, else None."""
        if folder:
            return cls(folder)
        base = db.storage_dir(gallery.storage_dir)
        return cls(base / f"{db.stem}_recordings") if base is not None else None

    @staticmethod
    def camera_folder(camera: str) -> str:
        """The store folder of ``camera``: its name where that is a plain name, else a digest of it."""
        if PART.fullmatch(camera):
            return camera
        return "cam-" + hashlib.sha256(camera.encode()).hexdigest()[:16]

    def segment_path(self, camera: str, started_at: datetime) -> str:
        """The store-relative path of ``camera``'s segment starting at ``started_at``."""
        t = started_at.astimezone(timezone.utc)
        return f"{self.camera_folder(camera)}/{t:%Y-%m-%d}/{t:%H%M%S.%f}.mp4"

    @staticmethod
    def partial(path: Path) -> Path:
        """The temporary name of a segment file while it is written."""
        return path.with_name(f".{path.name}.part")

    def make_folders(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, 0700."""
        self._make_folders(folder)

    def create(self, rel: str) -> Path:
        """An empty file (0600) at the temporary name of segment ``rel``, its folders made; returns that name."""
        path = self.resolve(rel)
        self._make_folders(path.parent)
        part = self.partial(path)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        return part

    def check_writable(self) -> None:
        """Raise :class:`RecordingError` (one line) unless files can be created under the root."""
        probe = self.root / f".write-test.{os.getpid()}"
        try:
            self._make_folders(self.root)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise RecordingError(
                f"recording folder {self.root}: expected a writable folder, got {exc.strerror or exc}"
            ) from None


def _segment(r: Recording) -> Segment:
    return Segment(r.id, r.camera, r.started_at, r.ended_at, r.path, r.size, r.masks or None)


def add_segment(db: Database, camera: str, started_at: datetime, path: str, masks: list | None = None) -> int:
    """A row for a segment being written (status ``recording``), with the camera's privacy ``masks`` in force
    (``[{"name", "points"}]``, fractions of the frame); returns its id."""
    with db.session() as s:
        row = Recording(
            camera=camera, started_at=started_at, path=path, size=0, status=RECORDING, masks=masks or None
        )
        s.add(row)
        s.flush()
        return row.id


def close_segment(
    db: Database, rec_id: int, ended_at: datetime, size: int, started_at: datetime | None = None
) -> None:
    """Mark segment ``rec_id`` done: its file is complete under its final name (``started_at``: a better estimate
    of its first frame's wall clock than the one it was added with)."""
    values = {"ended_at": ended_at, "size": size, "status": DONE}
    if started_at is not None:
        values["started_at"] = started_at
    with db.session() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(**values))


def discard_segment(db: Database, rec_id: int) -> None:
    """Delete the row of a segment that left no usable file."""
    with db.session() as s:
        s.execute(delete(Recording).where(Recording.id == rec_id))


def open_segments(db: Database) -> list[tuple[int, str, datetime, str]]:
    """Rows still ``recording`` (id, camera, started_at, path): written now, or left by a killed process."""
    with db.session() as s:
        rows = s.execute(
            select(Recording.id, Recording.camera, Recording.started_at, Recording.path).where(
                Recording.status == RECORDING
            )
        ).all()
    return [(i, c, t, p) for i, c, t, p in rows]


def known_paths(db: Database, prefix: str) -> set[str]:
    """The store-relative paths of every row (any status) under folder ``prefix``."""
    with db.session() as s:
        return set(s.scalars(select(Recording.path).where(Recording.path.startswith(prefix + "/"))))


def segments_for(db: Database, camera: str, start: datetime, end: datetime) -> list[Segment]:
    """The finished segments of ``camera`` overlapping the wall-clock window ``[start, end)`` (aware), oldest
    first."""
    with db.session() as s:
        rows = s.scalars(
            select(Recording)
            .where(
                Recording.camera == camera,
                Recording.status == DONE,
                Recording.started_at < end,
                Recording.ended_at > start,
            )
            .order_by(Recording.started_at, Recording.id)
        ).all()
        return [_segment(r) for r in rows]


_HELD = exists().where(
    CaseHold.recording_id == Recording.id, CaseHold.case_id == Case.id, Case.closed_at.is_(None)
)


def apply_retention(
    db: Database,
    store: RecordingStore,
    retention_days: float | None,
    max_bytes: int | None,
    now: datetime | None = None,
) -> list[Segment]:
    """Delete the segments past ``retention_days`` (by ``ended_at``), then the oldest while the total size of all
    segments exceeds ``max_bytes``; never one held by an open case, never one being written. Rows go in one
    transaction, then their files. Returns the deleted segments, oldest first."""
    now = now or datetime.now(timezone.utc)
    free = and_(Recording.status == DONE, ~_HELD)
    try:
        with db.session() as s:
            doomed: list[Recording] = []
            if retention_days is not None:
                cutoff = now - timedelta(days=retention_days)
                doomed += s.scalars(
                    select(Recording).where(free, Recording.ended_at < cutoff).order_by(Recording.started_at)
                ).all()
            if max_bytes is not None:
                gone = {r.id for r in doomed}
                total = (s.scalar(select(func.coalesce(func.sum(Recording.size), 0))) or 0) - sum(
                    r.size for r in doomed
                )
                if total > max_bytes:
                    for r in s.scalars(
                        select(Recording).where(free).order_by(Recording.started_at, Recording.id)
                    ):
                        if total <= max_bytes:
                            break
                        if r.id not in gone:
                            doomed.append(r)
                            total -= r.size
            deleted = [_segment(r) for r in doomed]
            if deleted:
                # the hold is checked again in the statement that deletes: a case opened meanwhile keeps its own
                s.execute(delete(Recording).where(Recording.id.in_([d.id for d in deleted]), free))
    except Exception as exc:
        raise (storage_error(exc, f"recordings index in {db.shown}") or exc) from None
    for seg in deleted:
        try:
            store.resolve(seg.path).unlink(missing_ok=True)
        except (OSError, GalleryError) as exc:
            logger.warning("recording %s: not removed (%s)", seg.path, exc)
    if deleted:
        logger.info("retention: %d segments deleted (%d bytes)", len(deleted), sum(d.size for d in deleted))
    return sorted(deleted, key=lambda d: d.started_at)


def _recording_row(r) -> dict:
    return {
        "id": r.id,
        "camera": r.camera,
        "started_at": r.started_at.isoformat(),
        "ended_at": r.ended_at.isoformat() if r.ended_at else None,
        "size": r.size,
        "path": r.path,
    }


def find_recordings(db: Database, f: Filters) -> Page:
    """Finished segments, newest first: camera, wall-clock start and end, size in bytes, store-relative path.
    ``source`` filters by camera; ``since``/``until`` keep the segments overlapping that window."""
    _refuse(f, "recordings", {"source", "since", "until"})
    stmt = select(Recording).where(Recording.status == DONE)
    if f.source is not None:
        stmt = stmt.where(Recording.camera == f.source)
    if f.since is not None:
        stmt = stmt.where(Recording.ended_at > f.since)
    if f.until is not None:
        stmt = stmt.where(Recording.started_at < f.until)
    with db.session() as s:
        return _page(
            s,
            stmt.order_by(Recording.started_at.desc(), Recording.id.desc()),
            f,
            lambda r: _recording_row(r[0]),
        )
