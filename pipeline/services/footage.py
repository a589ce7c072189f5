"""What a logged track's clip is cut from, and the cached clip of a track.

A file source's track is cut from the file its run read, refused in one line when that file is gone or its content
is no longer the one processed (:func:`gallery.content.content_key`). A camera track is cut from its camera's
recording segments (:mod:`gallery.recordings`) covering ``[seen_start - margin, seen_end + margin]``, across segment
boundaries into one clip: a segment's pts 0 is its ``started_at`` and the track's stream time ``t`` is the wall
clock ``seen_start + (t - start_time)``, so a segment's offset in track time is
``start_time + (started_at - seen_start)``. Each segment's frames are masked by the privacy masks in force when it
was recorded (``Recording.masks``, :meth:`stages.zones.Zones.clip_filter`). Time of the window no segment covers
(a reconnect, recording that started late or stopped) is reported in :attr:`Footage.gaps`; no segment at all (none
recorded, or deleted by retention) is a :class:`ClipError`.

:func:`track_clip` is the clip of a logged track (``RUN:TRACK``) with ``margin_s`` seconds each side, cached in the
thumbnail store beside the track's thumbnail (:func:`pipeline.services.clips.clip_rel`) and deleted with it
(:mod:`gallery.track_files`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select

from gallery.content import ContentKeyError, content_key
from gallery.db import Database
from gallery.models import Run, Source, Track
from gallery.recordings import RecordingStore, Segment, segments_for
from gallery.refs import parse_track_ref
from gallery.thumbnails import ThumbnailStore
from gallery.track_boxes import unpack_boxes
from pipeline.services.clips import DEFAULT_MARGIN_S, ClipError, ClipPart, FrameFilter, clip_rel, cut_clip
from stages.zones import ZoneConfig, Zones

logger = logging.getLogger(__name__)

__all__ = [
    "GAP_S",
    "Footage",
    "TrackFootage",
    "clip_window",
    "footage_of",
    "load_footage",
    "source_parts",
    "track_clip",
]

GAP_S = 0.5  # uncovered wall-clock time within a camera clip's window longer than this is a gap


@dataclass(frozen=True)
class TrackFootage:
    """What a clip of a logged track needs: its reference and ids, source kind, name (a camera's name) and file
    (``path``, the run's, else the source's uri) with its content key, the stream times ``start``/``end``, the
    sighting times ``seen_start``/``seen_end`` (aware, None: unknown) and its boxes ``[K, 5]``."""

    ref: str
    pk: int
    source_id: int
    run_id: int
    track_id: int
    kind: str
    source: str
    path: str | None
    content_key: str | None
    start: float
    end: float
    boxes: np.ndarray
    thumbnail: str | None
    snapshot: str | None
    seen_start: datetime | None = None
    seen_end: datetime | None = None


@dataclass(frozen=True)
class Footage:
    """What a track's clip is cut from: ``parts`` in order, the window ``[start, end)`` in track time, the recording
    ``segments`` used (a camera track) and the wall-clock spans of the window no segment covers (``gaps``)."""

    parts: tuple[ClipPart, ...]
    start: float
    end: float
    segments: tuple[Segment, ...] = ()
    gaps: tuple[tuple[datetime, datetime], ...] = ()


def load_footage(db: Database, refs: Sequence[str]) -> list[TrackFootage]:
    """The tracks ``refs`` (``RUN:TRACK`` each) in that order; one not in the match log is a :class:`ClipError`."""
    wanted = [parse_track_ref(r) for r in refs]
    found: dict[tuple[int, int], TrackFootage] = {}
    with db.session() as session:
        for run_id, track_id in wanted:
            row = session.execute(
                select(Track, Source.kind, Source.name, Source.uri, Source.content_key, Run.path)
                .join(Source, Source.id == Track.source_id)
                .join(Run, Run.id == Track.run_id)
                .where(Track.run_id == run_id, Track.track_id == track_id)
            ).first()
            if row is None:
                raise ClipError(
                    f"track {run_id}:{track_id}: not in the match log; expected a reference of 'query tracks'"
                )
            t = row.Track
            found[(run_id, track_id)] = TrackFootage(
                ref=f"{run_id}:{track_id}",
                pk=t.id,
                source_id=t.source_id,
                run_id=run_id,
                track_id=track_id,
                kind=row.kind,
                source=row.name,
                path=row.path or row.uri,
                content_key=row.content_key,
                start=float(t.start_time),
                end=float(t.end_time),
                boxes=unpack_boxes(t.boxes),
                thumbnail=t.thumbnail,
                snapshot=t.snapshot,
                seen_start=t.seen_start,
                seen_end=t.seen_end,
            )
    return [found[w] for w in wanted]


def source_parts(track: TrackFootage, verify: bool = True) -> list[ClipPart]:
    """The file a clip of file track ``track`` is cut from: its source's own file (with ``verify``: refused when
    it is missing or its content key is not the one logged)."""
    if not track.path:
        raise ClipError(f"track {track.ref}: its run did not record the path of its file")
    path = Path(track.path)
    if not path.is_file():
        raise ClipError(
            f"track {track.ref}: its source file {path} is missing (moved or deleted); expected the file processed"
        )
    if verify and track.content_key is not None:
        try:
            key = content_key(path)
        except ContentKeyError as exc:
            raise ClipError(f"track {track.ref}: {exc}") from None
        if key != track.content_key:
            raise ClipError(
                f"track {track.ref}: its source file {path} has changed since it was processed (content key "
                f"{key[:12]}, logged {track.content_key[:12]})"
            )
    elif verify:
        logger.warning("track %s: %s was logged without a content key: not verified", track.ref, path)
    return [ClipPart(path, 0.0)]


def clip_window(track: TrackFootage, margin_s: float) -> tuple[float, float]:
    """``[start, end)`` of a track's clip: its span and ``margin_s`` each side (a file's from 0 at the earliest;
    a camera's recording may hold what came before its stream's time 0)."""
    if not 0 <= margin_s <= 3600:
        raise ClipError(f"clip margin: expected 0-3600 seconds, got {margin_s}")
    start = track.start - margin_s
    return max(0.0, start) if track.kind == "file" else start, track.end + margin_s + 1e-3


def _masks_filter(masks: list | None, made: dict[str, FrameFilter]) -> FrameFilter | None:
    """The clip filter of a segment's privacy ``masks`` (``[{"name", "points"}]``), one per distinct set."""
    if not masks:
        return None
    key = json.dumps(masks, sort_keys=True)
    if key not in made:
        zones = [ZoneConfig(name=m["name"], points=m["points"], mask=True) for m in masks]
        made[key] = Zones(zones).clip_filter()
    return made[key]


def _gaps(segments: Sequence[Segment], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The spans of ``[start, end)`` no segment covers, longer than :data:`GAP_S`."""
    out, cursor, tolerance = [], start, timedelta(seconds=GAP_S)
    for seg in segments:
        if seg.started_at - cursor > tolerance:
            out.append((cursor, min(seg.started_at, end)))
        cursor = max(cursor, seg.ended_at)
    if end - cursor > tolerance:
        out.append((cursor, end))
    return out


def recorded_footage(
    db: Database, recordings: RecordingStore | None, track: TrackFootage, margin_s: float
) -> Footage:
    """The recording segments of camera track ``track`` covering its sighting and ``margin_s`` each side, as clip
    parts (masked); :class:`ClipError` when none does."""
    start, end = clip_window(track, margin_s)
    if track.seen_start is None:
        raise ClipError(
            f"track {track.ref}: no recording covers this track (its sighting time is unknown); expected a "
            f"camera track with seen_start"
        )
    seen_end = track.seen_end or track.seen_start + timedelta(seconds=track.end - track.start)
    wall_start = track.seen_start - timedelta(seconds=margin_s)
    wall_end = seen_end + timedelta(seconds=margin_s)
    segments = segments_for(db, track.source, wall_start, wall_end) if recordings is not None else []
    kept = []
    for seg in segments:
        if recordings.resolve(seg.path).is_file():
            kept.append(seg)
        else:
            logger.warning("track %s: recording %s is in the index but its file is gone", track.ref, seg.path)
    if segments and not kept:
        raise ClipError(
            f"track {track.ref}: no recording covers this track ({len(segments)} segments of its time are "
            f"indexed but their files are not in {recordings.root}: deleted, or recorded to another folder; "
            f"expected live.recording.dir of this command's config to be the folder stream recorded to)"
        )
    if not kept:
        raise ClipError(
            f"track {track.ref}: no recording covers this track (camera {track.source!r}, "
            f"{wall_start.isoformat(timespec='seconds')} to {wall_end.isoformat(timespec='seconds')}: none "
            f"recorded, or deleted); expected a camera recording of its time"
        )
    made: dict[str, FrameFilter] = {}
    parts = tuple(
        ClipPart(
            recordings.resolve(seg.path),
            track.start + (seg.started_at - track.seen_start).total_seconds(),
            _masks_filter(seg.masks, made),
        )
        for seg in kept
    )
    gaps = _gaps(kept, wall_start, wall_end)
    if gaps:
        logger.warning(
            "track %s: the recordings leave %d gaps in its clip's window (%.1f s)",
            track.ref,
            len(gaps),
            sum((b - a).total_seconds() for a, b in gaps),
        )
    return Footage(parts, start, end, tuple(kept), tuple(gaps))


def footage_of(
    db: Database,
    track: TrackFootage,
    margin_s: float = DEFAULT_MARGIN_S,
    recordings: RecordingStore | None = None,
    verify: bool = True,
) -> Footage:
    """What the clip of ``track`` with ``margin_s`` each side is cut from: its file (a file source, checked with
    ``verify``) or the segments of ``recordings`` (a camera); :class:`ClipError` when there is none."""
    if track.kind == "file":
        return Footage(tuple(source_parts(track, verify)), *clip_window(track, margin_s))
    return recorded_footage(db, recordings, track, margin_s)


def track_clip(
    db: Database,
    store: ThumbnailStore | None,
    ref: str,
    margin_s: float = DEFAULT_MARGIN_S,
    recordings: RecordingStore | None = None,
) -> Path:
    """The clip of track ``ref``: the cached file in ``store`` when there is one, else cut now (and cached at the
    default margin; a store-less database or another margin gets a file in a temporary folder the caller
    removes). A camera track's clip is cut from ``recordings``. The source is checked first either way: a cached
    clip of a file that moved or changed, or of a recording since deleted, is refused too."""
    (track,) = load_footage(db, [ref])
    footage = footage_of(db, track, margin_s, recordings)
    if store is not None and margin_s == DEFAULT_MARGIN_S:
        cached = store.resolve(clip_rel(track.source_id, track.run_id, track.track_id))
        if cached.is_file():
            return cached
    else:
        cached = Path(tempfile.mkdtemp(prefix="facemoe-clip-")) / f"track{track.track_id}_clip.mp4"
    return cut_clip(footage.parts, footage.start, footage.end, cached, track.boxes).path
