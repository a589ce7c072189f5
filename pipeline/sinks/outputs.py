"""Where per-track results go: a console table, a JSON document, best-crop thumbnails.

A sink receives each finished track once (``on_track``) and is closed once at the end of the run (``close``),
which is when the table is printed and the JSON file written (atomically: complete or absent).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import cv2

from core.types import MatchResult, TrackTemplate
from gallery.names import shown
from gallery.refs import track_ref

__all__ = [
    "CollectSink",
    "ConsoleTableSink",
    "JsonSink",
    "ResultSink",
    "ThumbnailSink",
    "logged_ref",
    "sighting_datetimes",
    "sighting_span",
    "sighting_times",
    "thumbnail_name",
    "track_record",
    "wall_epochs",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class ResultSink(Protocol):
    def on_track(self, template: TrackTemplate, result: MatchResult) -> None: ...

    def close(self) -> None: ...


def thumbnail_name(source_id: str, track_id: int) -> str:
    """File name of a track's best-crop thumbnail: ``<video stem>_track<id>.jpg``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source_id).stem) or "source"
    return f"{stem}_track{track_id:05d}.jpg"


def sighting_datetimes(template: TrackTemplate) -> tuple[datetime | None, datetime | None]:
    """The track's first and last sighting as aware UTC datetimes, (None, None) when unknown."""
    return tuple(  # type: ignore[return-value]
        None if t is None else datetime.fromtimestamp(t, timezone.utc)
        for t in (template.wall_start, template.wall_end)
    )


def wall_epochs(start: datetime | None, end: datetime | None) -> tuple[float | None, float | None]:
    """Stored sighting times back as the epoch seconds of :attr:`TrackTemplate.wall_start`/``wall_end``."""
    return tuple(None if t is None else t.timestamp() for t in (start, end))  # type: ignore[return-value]


def sighting_times(template: TrackTemplate) -> tuple[str | None, str | None]:
    """The track's first and last sighting (ISO 8601 with offset, to the millisecond), (None, None) when unknown."""
    return tuple(  # type: ignore[return-value]
        None if t is None else t.isoformat(timespec="milliseconds") for t in sighting_datetimes(template)
    )


def sighting_span(template: TrackTemplate) -> str:
    """``START..END`` in wall clock with the offsets within the source beside it, or only the offsets when the
    wall clock is unknown."""
    offsets = f"{template.first_timestamp:.1f}-{template.last_timestamp:.1f}s"
    start, end = sighting_times(template)
    return offsets + " (time unknown)" if start is None else f"{start}..{end} ({offsets})"


def logged_ref(run_ids: Mapping[str, int] | None, template: TrackTemplate) -> str | None:
    """The track's reference ``RUN:TRACK`` given the match-log run of each source; None when its source has none."""
    run = (run_ids or {}).get(template.source_id)
    return None if run is None else track_ref(run, template.track_id)


def track_record(
    template: TrackTemplate,
    result: MatchResult,
    thumbnail_dir: Path | None = None,
    run_ids: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The plain-data summary of one track (what the JSON output and the table show); ``run_ids``: the match-log
    run of each source, which makes the track's ``ref`` (None when it is not logged)."""
    best = result.identity
    seen_start, seen_end = sighting_times(template)
    record: dict[str, Any] = {
        "ref": logged_ref(run_ids, template),
        "source": template.source_id,
        "track_id": template.track_id,
        "seen_start": seen_start,
        "seen_end": seen_end,
        "start_s": round(template.first_timestamp, 3),
        "end_s": round(template.last_timestamp, 3),
        "frames": template.num_frames,
        "crops_embedded": template.num_crops,
        "decision": result.decision,
        "identity": best.name if best else None,
        "score": round(result.candidates[0].score, 4) if result.candidates else None,
        "threshold": round(result.threshold, 4),
        "candidates": [
            {"identity_id": c.identity_id, "name": c.name, "score": round(c.score, 4)}
            for c in result.candidates
        ],
        "thumbnail": None,
    }
    if thumbnail_dir is not None and template.best_crop is not None:
        record["thumbnail"] = str(Path(thumbnail_dir) / thumbnail_name(template.source_id, template.track_id))
    return record


class ConsoleTableSink:
    """Prints one row per track, ordered by source and start time, when closed; ``run_ids``: the match-log run of
    each source, for the ``ref`` column (``-`` for a source not logged). ``seen``: the wall clock of the track's
    first frame (``unknown`` when the source has no recording time), ``start``/``end``: seconds within the
    source."""

    COLUMNS = (
        "ref",
        "source",
        "seen",
        "start",
        "end",
        "frames",
        "crops",
        "decision",
        "identity",
        "score",
        "runner-up",
    )

    def __init__(self, stream: TextIO | None = None, run_ids: Mapping[str, int] | None = None) -> None:
        self.stream = stream
        self.run_ids = run_ids
        self.rows: list[tuple] = []

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        cands = result.candidates
        runner = f"{cands[1].name} {cands[1].score:.3f}" if len(cands) > 1 else "-"
        top = f"{cands[0].score:.3f}" if cands else "-"
        name = result.identity.name if result.identity else (f"({cands[0].name})" if cands else "-")
        self.rows.append(
            (
                template.source_id,
                template.first_timestamp,
                (
                    logged_ref(self.run_ids, template) or "-",
                    Path(template.source_id).name,
                    sighting_times(template)[0] or "unknown",
                    f"{template.first_timestamp:.2f}",
                    f"{template.last_timestamp:.2f}",
                    str(template.num_frames),
                    str(template.num_crops),
                    result.decision,
                    name,
                    top,
                    runner,
                ),
            )
        )

    def close(self) -> None:
        stream = self.stream or sys.stdout
        rows = [[shown(v) for v in r[2]] for r in sorted(self.rows, key=lambda r: (r[0], r[1]))]
        widths = [
            max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(self.COLUMNS)
        ]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.COLUMNS, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows] or ["(no face tracks)"]
        stream.write("".join(line.rstrip() + "\n" for line in lines))
        stream.flush()


class JsonSink:
    """Collects track records and writes them as one JSON document on close (``-`` = standard output)."""

    def __init__(
        self,
        target: str | Path,
        thumbnail_dir: Path | None = None,
        extra: dict | None = None,
        run_ids: Mapping[str, int] | None = None,
    ) -> None:
        self.target = str(target)
        self.thumbnail_dir = thumbnail_dir
        self.extra = extra or {}
        self.run_ids = run_ids
        self.records: list[dict[str, Any]] = []

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        self.records.append(track_record(template, result, self.thumbnail_dir, self.run_ids))

    def close(self) -> None:
        records = sorted(self.records, key=lambda r: (r["source"], r["start_s"], r["track_id"]))
        text = json.dumps({**self.extra, "tracks": records}, indent=2) + "\n"
        if self.target == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class ThumbnailSink:
    """Saves each track's best aligned crop as a JPEG in ``folder`` (resized to ``size`` px)."""

    def __init__(self, folder: Path, size: int = 112) -> None:
        self.folder = Path(folder)
        self.size = size
        self.written: list[Path] = []

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        if template.best_crop is None:
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # faces: readable by their owner only
        image = template.best_crop.image
        if self.size != image.shape[0]:
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_CUBIC)
        path = self.folder / thumbnail_name(template.source_id, template.track_id)
        ok, data = cv2.imencode(".jpg", image)
        try:
            if not ok:
                raise OSError("JPEG encoding failed")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.tobytes())
        except OSError as exc:
            logger.warning("could not write thumbnail %s: %s", path, exc)
            return
        self.written.append(path)

    def close(self) -> None:
        logger.info("%d thumbnails in %s", len(self.written), self.folder)


class CollectSink:
    """Keeps every track's (template, result) in memory, for callers that need them all after the run."""

    def __init__(self) -> None:
        self.results: list[tuple[TrackTemplate, MatchResult]] = []

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        self.results.append((template, result))

    def close(self) -> None:
        """Nothing to flush."""
