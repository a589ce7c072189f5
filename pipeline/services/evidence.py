"""Case export: the evidence of logged tracks in one folder whose every file is listed with its SHA-256.

:func:`export_evidence` writes, per track (folder ``track_RUN_TRACK``): ``clip.mp4`` (its span and ``margin_s``
each side, its box drawn, :mod:`pipeline.services.clips`), ``snapshot.jpg`` (the context frame), ``crop.jpg`` (the best
crop), ``enrolled.jpg`` (the enrolled face it matched, where it may be shown) and ``record.json`` (the track's row as
every view shows it, :func:`gallery.forensic.track_detail`, with the source, the threshold in force and its origin,
the software version, the clip's window and the redaction). ``manifest.json`` lists every other file with its size
and SHA-256, the export's time, operator (the OS account), note and case. With ``redact`` every face in the clips
and snapshots but the exported tracks' own is blurred (:mod:`pipeline.services.redaction`), counted in each record.
A camera track's clip is cut from its camera's recordings (:mod:`pipeline.services.footage`, their privacy masks
applied first); its record names the segments used and the gaps no segment covers, and the case holds those segments
(``case_holds`` rows written with the ``cases`` row) so retention keeps them until the case is closed
(:func:`gallery.cases.close_case`).

Everything is checked before anything is written (references, source files, the output folder, the case name); the
export is built in a temporary folder beside ``out`` and renamed at the end, with its ``cases`` row written just
before; nothing is left half-written on an error.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import av
import cv2
from sqlalchemy import delete, select

from gallery.db import Database
from gallery.evidence_models import Case, CaseHold, Recording
from gallery.forensic import MediaUnavailable, enrolled_photo, track_detail
from gallery.models import MatchEvent, Run, Track
from gallery.recordings import RecordingStore
from gallery.thumbnails import ThumbnailStore
from gallery.track_boxes import unpack_boxes
from pipeline.errors import PipelineError
from pipeline.runners.sources import FileSource
from pipeline.services.clips import DEFAULT_MARGIN_S, clip_rel, cut_clip
from pipeline.services.footage import Footage, TrackFootage, clip_window, footage_of, load_footage
from pipeline.services.redaction import REDACT_SCORE, Redactor
from stages.detect import FaceDetector

logger = logging.getLogger(__name__)

__all__ = ["EvidenceError", "ExportReport", "export_evidence", "software_version"]

PACKAGE = "facemoe-surveillance"


class EvidenceError(PipelineError):
    """An export that cannot be made: its folder, case name or references."""


@dataclass(frozen=True)
class ExportReport:
    """A finished export: its folder, zip (or None), case, track references, files listed, faces blurred and
    recording segments the case holds."""

    out: Path
    zip: Path | None
    case: str
    tracks: tuple[str, ...]
    files: int
    blurred: int
    held: int = 0


def software_version() -> str:
    """The installed package's version, ``unknown`` when it runs from a checkout that is not installed."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _copy_private(src: Path, dst: Path) -> None:
    _write_private(dst, src.read_bytes())


def _check_out(out: Path, make_zip: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvidenceError(
            f"evidence --out {out}: expected a new or empty folder, got an existing non-empty one"
        )
    if not out.parent.is_dir():
        raise EvidenceError(f"evidence --out {out}: expected its parent folder to exist")
    if make_zip and out.with_suffix(".zip").exists():
        raise EvidenceError(f"evidence --zip: {out.with_suffix('.zip')} exists already")


def _others(db: Database, track: TrackFootage, exported: set[str], window: tuple[float, float]) -> list:
    """Rows ``[K, 5]`` of the other tracks of ``track``'s run seen during ``window`` (not exported)."""
    with db.session() as session:
        rows = session.execute(
            select(Track.track_id, Track.boxes).where(
                Track.run_id == track.run_id,
                Track.start_time <= window[1],
                Track.end_time >= window[0],
                Track.boxes.is_not(None),
            )
        ).all()
    return [unpack_boxes(b) for tid, b in rows if f"{track.run_id}:{tid}" not in exported]


def _decision_of(db: Database, track: TrackFootage) -> dict:
    with db.session() as session:
        run = session.get(Run, track.run_id)
        event_threshold = session.scalar(select(MatchEvent.threshold).where(MatchEvent.track_pk == track.pk))
    return {
        "threshold": event_threshold,
        "run_threshold": run.threshold if run else None,
        "threshold_origin": run.threshold_origin if run else None,
    }


def _frame_width(path: Path) -> int:
    """Width of the upright frames of the video at ``path``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        return FileSource._upright(frame).shape[1]


def _image_file(store: ThumbnailStore | None, rel: str | None) -> Path | None:
    if store is None or not rel:
        return None
    path = store.resolve(rel)
    return path if path.is_file() else None


def _export_track(
    db: Database,
    store: ThumbnailStore | None,
    track: TrackFootage,
    footage: Footage,
    folder: Path,
    redactor: Redactor | None,
    margin_s: float,
    media_dirs: Sequence[str],
) -> int:
    """Write one track's files into ``folder``, its clip cut from ``footage``; returns the faces blurred."""
    folder.mkdir(mode=0o700)
    parts, window = footage.parts, (footage.start, footage.end)
    cached = None
    if redactor is None and store is not None and margin_s == DEFAULT_MARGIN_S:
        cached = store.resolve(clip_rel(track.source_id, track.run_id, track.track_id))
    if cached is not None and cached.is_file():
        _copy_private(cached, folder / "clip.mp4")
        clip = None
    else:
        clip = cut_clip(parts, *window, cached or folder / "clip.mp4", track.boxes, redactor)
        if cached is not None:
            _copy_private(cached, folder / "clip.mp4")
    clip_blurred = redactor.blurred if redactor is not None else 0
    files = {"clip": "clip.mp4"}
    snapshot = _image_file(store, track.snapshot)
    if snapshot is not None:
        if redactor is None:
            _copy_private(snapshot, folder / "snapshot.jpg")
        else:
            image = cv2.imread(str(snapshot), cv2.IMREAD_COLOR)
            scale = image.shape[1] / _frame_width(parts[0].path)
            ok, data = cv2.imencode(
                ".jpg", redactor.still(image, track.boxes, scale), [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            _write_private(folder / "snapshot.jpg", data.tobytes())
        files["snapshot"] = "snapshot.jpg"
    crop = _image_file(store, track.thumbnail)
    if crop is not None:
        _copy_private(crop, folder / "crop.jpg")
        files["crop"] = "crop.jpg"
    detail = track_detail(db, track.ref, media_dirs) or {}
    enrolled = detail.get("enrolled")
    if enrolled and enrolled.get("url"):
        try:
            photo = enrolled_photo(db, store, media_dirs, enrolled["media_id"])
        except MediaUnavailable as exc:
            enrolled["note"] = str(exc)
        else:
            data = photo.read_bytes() if isinstance(photo, Path) else photo
            _write_private(folder / "enrolled.jpg", data)
            files["enrolled"] = "enrolled.jpg"
    blurred = redactor.blurred if redactor is not None else 0
    record = detail | _decision_of(db, track)
    record |= {
        "source_file": {"path": track.path, "content_key": track.content_key}
        if track.kind == "file"
        else None,
        "recording": _recording_record(track, footage),
        "software_version": software_version(),
        "files": files,
        "clip": {
            "margin_s": margin_s,
            "window": [round(window[0], 3), round(track.end + margin_s, 3)],
            "first_frame": round(clip.start, 6) if clip else None,
            "last_frame": round(clip.end, 6) if clip else None,
            "frames": clip.frames if clip else None,
            "boxed_frames": clip.boxed if clip else None,
            "boxes_stored": int(len(track.boxes)),
        },
        "redaction": None
        if redactor is None
        else {
            "blurred_faces": blurred,
            "blurred_in_clip": clip_blurred,
            "blurred_in_snapshot": blurred - clip_blurred,
            "detector": str(redactor.detector.model_path.name),
            "score_threshold": redactor.detector.cfg.score_threshold,
        },
    }
    _write_private(folder / "record.json", json.dumps(record, indent=2, default=str).encode())
    return blurred


def export_evidence(
    db: Database,
    store: ThumbnailStore | None,
    refs: Sequence[str],
    out: Path | str,
    redact: bool = False,
    note: str = "",
    *,
    case: str | None = None,
    detector: FaceDetector | None = None,
    margin_s: float = DEFAULT_MARGIN_S,
    media_dirs: Sequence[str] = (),
    make_zip: bool = False,
    operator: str | None = None,
    recordings: RecordingStore | None = None,
) -> ExportReport:
    """Export the tracks ``refs`` (``RUN:TRACK``) into the new folder ``out`` (see the module's text); ``redact``
    needs ``detector`` (:func:`pipeline.services.redaction.redaction_detector`). ``case``: the case's name (default: the
    folder's name); ``make_zip``: also ``out`` zipped as ``<out>.zip``; ``recordings``: where camera tracks' clips
    are cut from. Bad input raises a :class:`PipelineError`
    before anything is written."""
    out = Path(out).absolute()
    if not refs:
        raise EvidenceError("evidence: expected at least one track reference RUN:TRACK")
    if len(set(refs)) != len(refs):
        raise EvidenceError("evidence: a track reference is given twice")
    if redact and detector is None:
        raise EvidenceError("evidence --redact: expected a face detector to find the faces to blur")
    _check_out(out, make_zip)
    name = (case or out.name).strip()
    if not 1 <= len(name) <= 200:
        raise EvidenceError(f"evidence --case: expected a name of 1-200 characters, got {len(name)}")
    tracks = load_footage(db, refs)
    # a missing or changed file, a camera track no recording covers: before anything is written
    footages = [footage_of(db, track, margin_s, recordings) for track in tracks]
    with db.session() as session:
        if session.scalar(select(Case.id).where(Case.name == name)) is not None:
            raise EvidenceError(f"evidence: case {name!r} exists already; expected a new case name (--case)")
    operator = operator or getpass.getuser()
    exported = {t.ref for t in tracks}
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    zipped = case_id = None
    try:
        blurred = 0
        for track, footage in zip(tracks, footages):
            redactor = None
            if redact:
                kept = [t.boxes for t in tracks if t.run_id == track.run_id and len(t.boxes)]
                others = _others(db, track, exported, clip_window(track, margin_s))
                redactor = Redactor(detector, kept, others)
            folder = temp / f"track_{track.run_id}_{track.track_id}"
            blurred += _export_track(db, store, track, footage, folder, redactor, margin_s, media_dirs)
        files = sorted(p for p in temp.rglob("*") if p.is_file())
        now = datetime.now(timezone.utc)
        manifest = {
            "case": name,
            "note": note,
            "operator": operator,
            "exported_at": now.isoformat(),
            "software_version": software_version(),
            "redacted": redact,
            "redaction_score_threshold": min(detector.cfg.score_threshold, REDACT_SCORE) if redact else None,
            "tracks": [t.ref for t in tracks],
            "files": [
                {"path": p.relative_to(temp).as_posix(), "bytes": p.stat().st_size, "sha256": _sha256(p)}
                for p in files
            ],
        }
        _write_private(temp / "manifest.json", json.dumps(manifest, indent=2).encode())
        if make_zip:
            zipped = _zip(temp, out)
        with db.session() as session:
            row = Case(name=name, note=note, operator=operator, opened_at=now)
            session.add(row)
            session.flush()
            case_id = row.id
            held = _hold(session, case_id, footages)
        if out.is_dir():
            out.rmdir()
        os.replace(temp, out)
        if zipped is not None:
            os.replace(zipped, out.with_suffix(".zip"))
            zipped = out.with_suffix(".zip")
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        if zipped is not None:
            zipped.unlink(missing_ok=True)
        if case_id is not None and not out.is_dir():
            with db.session() as session:
                session.execute(delete(CaseHold).where(CaseHold.case_id == case_id))
                session.execute(delete(Case).where(Case.id == case_id))
        raise
    logger.info("evidence: %d tracks exported to %s (case %r)", len(tracks), out, name)
    return ExportReport(out, zipped, name, tuple(t.ref for t in tracks), len(files) + 1, blurred, held)


def _recording_record(track: TrackFootage, footage: Footage) -> dict | None:
    """The record's account of a camera clip's recordings: segments used, gaps in the window, masks applied."""
    if track.kind == "file":
        return None
    return {
        "camera": track.source,
        "segments": [
            {
                "id": s.id,
                "path": s.path,
                "started_at": s.started_at.isoformat(),
                "ended_at": s.ended_at.isoformat(),
                "masks": [m["name"] for m in s.masks or ()],
            }
            for s in footage.segments
        ],
        "gaps": [[a.isoformat(), b.isoformat()] for a, b in footage.gaps],
        "complete": not footage.gaps,
    }


def _hold(session, case_id: int, footages: Sequence[Footage]) -> int:
    """Hold the recording segments of ``footages`` for case ``case_id`` (those retention has not deleted since);
    returns how many."""
    wanted = sorted({s.id for f in footages for s in f.segments})
    if not wanted:
        return 0
    there = set(session.scalars(select(Recording.id).where(Recording.id.in_(wanted))))
    if len(there) < len(wanted):
        logger.warning(
            "evidence: %d recording segments were deleted during the export", len(wanted) - len(there)
        )
    session.add_all(CaseHold(case_id=case_id, recording_id=i) for i in wanted if i in there)
    return len(there)


def _zip(folder: Path, out: Path) -> Path:
    """``folder`` zipped (its files under ``out.name/``) into a temporary file beside ``out``."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".zip.tmp", dir=out.parent)
    os.close(fd)
    path = Path(name)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{out.name}/{p.relative_to(folder).as_posix()}")
    os.chmod(path, 0o600)
    return path
