"""Recovery of camera recordings after a killed process, and ``purge``'s retention of them.

:func:`recover` (at the start of a recording process and by ``purge``): segments left ``recording`` by a killed
process are finalised (their readable prefix remuxed into a plain MP4, ``ended_at`` and ``size`` set) or discarded
(row and files) when nothing is readable, and files without a row are removed. A camera folder whose lock a live
recorder holds (:func:`camera_lock`) is left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import av

from core.errors import ConfigError
from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.recordings import (
    RecordingStore,
    apply_retention,
    close_segment,
    discard_segment,
    known_paths,
    open_segments,
)
from pipeline.live.config import RecordingConfig

__all__ = ["camera_lock", "purge_recordings", "recordings_store", "recover"]

logger = logging.getLogger(__name__)


def recordings_store(db: Database, recording: RecordingConfig, gallery: GalleryConfig) -> RecordingStore:
    """The recording store of ``db`` (``live.recording.dir`` else beside the database); ConfigError if none."""
    store = RecordingStore.for_recordings(db, recording.dir, gallery)
    if store is None:
        raise ConfigError(
            f"recording: expected live.recording.dir or gallery.storage_dir for database {db.shown}, got neither"
        )
    return store


@contextmanager
def camera_lock(store: RecordingStore, folder: str, wait: bool = False) -> Iterator[bool]:
    """Hold the lock of camera folder ``folder`` (a lock file at the store's root); yields False when another
    process or thread holds it (and ``wait`` is False)."""
    store.make_folders(store.root)
    fd = os.open(store.root / f".{folder}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remux_prefix(src: Path, dst: Path) -> float | None:
    """Copy the readable packets of ``src`` into a plain MP4 at ``dst`` (0600); the end time (s) of its last
    packet, or None (and no ``dst``) when no packet could be read."""
    end = None
    try:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                return None
            ins = inp.streams.video[0]
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            with av.open(str(dst), "w", format="mp4") as out:
                outs = out.add_stream_from_template(ins)
                try:
                    for p in inp.demux(ins):
                        if p.dts is None or p.pts is None or p.is_corrupt:
                            continue
                        t = float((p.pts + (p.duration or 0)) * p.time_base)
                        p.stream = outs
                        out.mux(p)
                        end = max(end or 0.0, t)
                except av.FFmpegError:
                    pass  # the cut-off end of a killed writer
    except (av.FFmpegError, OSError) as exc:
        logger.info("recording %s: unreadable (%s)", src.name, exc)
        end = None
    if end is None:
        dst.unlink(missing_ok=True)
    return end


def _recover_segment(
    db: Database, store: RecordingStore, rec_id: int, started_at: datetime, rel: str
) -> bool:
    """Finalise or discard one segment left ``recording``; True when finalised."""
    final = store.resolve(rel)
    part = store.partial(final)
    tmp = final.with_name(f".{final.name}.recover")
    for src in (part, final):
        if src.is_file() and (end := _remux_prefix(src, tmp)) is not None:
            os.replace(tmp, final)
            part.unlink(missing_ok=True)
            close_segment(db, rec_id, started_at + timedelta(seconds=end), final.stat().st_size)
            logger.warning("recording %s: finalised after an interrupted run (%.1f s kept)", rel, end)
            return True
    discard_segment(db, rec_id)
    for path in (part, final, tmp):
        path.unlink(missing_ok=True)
    logger.warning("recording %s: discarded after an interrupted run (nothing readable)", rel)
    return False


def recover(db: Database, store: RecordingStore) -> dict[str, int]:
    """Finalise or discard the segments left ``recording`` by killed processes and remove files without a row, for
    every camera folder whose lock is free. Returns counts ``finalised``, ``discarded``, ``orphans``."""
    counts = {"finalised": 0, "discarded": 0, "orphans": 0}
    pending: dict[str, list] = {}
    for rec_id, _camera, started_at, rel in open_segments(db):
        pending.setdefault(rel.split("/", 1)[0], []).append((rec_id, started_at, rel))
    folders = set(pending)
    if store.root.is_dir():
        folders |= {p.name for p in store.root.iterdir() if p.is_dir()}
    for folder in sorted(folders):
        with camera_lock(store, folder) as mine:
            if not mine:
                continue  # recorded now by a live process
            for rec_id, started_at, rel in pending.get(folder, []):
                counts[
                    "finalised" if _recover_segment(db, store, rec_id, started_at, rel) else "discarded"
                ] += 1
            root = store.root / folder
            files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
            rows = known_paths(db, folder)  # after listing: a row is always written before its file
            for path in files:
                if path.relative_to(store.root).as_posix() not in rows:
                    path.unlink(missing_ok=True)
                    counts["orphans"] += 1
    if any(counts.values()):
        logger.warning("recordings recovered: %s", counts)
    return counts


def purge_recordings(db: Database, cfg) -> int | None:
    """``purge``: recover interrupted segments, then apply ``cfg.live.recording``'s retention (``cfg``: the app
    config). The number of segments deleted, or None when the database has no recording folder."""
    rec = cfg.live.recording
    store = RecordingStore.for_recordings(db, rec.dir, cfg.gallery)
    if store is None or not store.root.is_dir():
        return None
    recover(db, store)
    return len(apply_retention(db, store, rec.retention_days, rec.max_bytes))
