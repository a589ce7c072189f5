"""The pipeline's link to the SQL gallery: its templates as the matcher's index, its match log as a sink.

The builder (``pipeline.build``) makes both for every command: the gallery of the database is searched through
FAISS and every finished track is written to the match log, one run per source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from core.secrets import redact_url
from core.types import Candidate, MatchResult, TrackTemplate
from gallery.matchlog import HEARTBEAT_S, MatchLogWriter, TrackRecord
from gallery.store import Gallery
from gallery.thresholds import InForce
from gallery.thumbnails import ThumbnailStore
from gallery.track_index import TrackIndexes
from pipeline.sinks.outputs import sighting_datetimes

__all__ = ["LoggedSource", "MatchLogSink", "SqlGalleryIndex"]

logger = logging.getLogger(__name__)


class SqlGalleryIndex:
    """The gallery of a database as the matcher's index, for one embedder.

    ``threshold``: the matcher's configured threshold (``match.threshold``); None takes the gallery's own (config
    override, else the stored calibration, else its default). ``in_force``: the value used and its origin."""

    def __init__(self, gallery: Gallery, embedder_id: str, threshold: float | None = None) -> None:
        self.gallery = gallery
        self.embedder_id = embedder_id
        self.in_force: InForce = gallery.threshold_in_force(embedder_id, threshold)
        self.threshold = self.in_force.value

    def __len__(self) -> int:
        return sum(1 for i in self.gallery.identities() if self.embedder_id in i.embedders)

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Candidate]]:
        rows = self.gallery.search(embeddings, k, self.embedder_id)
        return [[Candidate(i, n, s) for i, n, s in row] for row in rows]


@dataclass(frozen=True)
class LoggedSource:
    """One source of a run as the match log records it: ``name`` (a file path or a camera name), ``kind``
    (``file`` or ``camera``) and its ``uri``, redacted here (password and tokens as ``***``) so that no
    credential is ever stored; ``recorded_at``: the wall clock of its stream time 0 (files, when known) and
    ``time_origin`` where its sighting times come from (``given``, ``container``, ``filename``, ``camera``,
    ``unknown``)."""

    name: str
    kind: str
    uri: str | None = None
    recorded_at: datetime | None = None
    time_origin: str = "unknown"
    content_key: str | None = None  # a file's gallery.content.content_key: its source is known by content

    def __post_init__(self) -> None:
        if self.uri is not None:
            object.__setattr__(self, "uri", redact_url(self.uri))


class MatchLogSink:
    """Writes each finished track to the match log: one writer (one run) per source.

    ``batch_size``: tracks per transaction (1 for cameras, so that a track is in the log as soon as it ends);
    a crash loses at most the uncommitted batch, never half a track."""

    def __init__(
        self,
        gallery: Gallery,
        sources: list[LoggedSource],
        embedder_id: str,
        cfg_hash: str,
        batch_size: int = 1,
        heartbeat_s: float = HEARTBEAT_S,
        resumed_from: dict[str, int] | None = None,
        track_index: TrackIndexes | None = None,
        threshold: InForce | None = None,
    ) -> None:
        self.embedder_id = embedder_id
        self.writers: dict[str, MatchLogWriter] = {}
        self.origins = {s.name: s.time_origin for s in sources}
        thumbnails = ThumbnailStore.for_database(gallery.db, gallery.config)  # the section's folder rule
        resumed_from = resumed_from or {}
        try:
            for s in sources:
                self.writers[s.name] = MatchLogWriter(
                    gallery.db,
                    source=s.name,
                    kind=s.kind,
                    uri=s.uri,
                    content_key=s.content_key,
                    config_hash=cfg_hash,
                    batch_size=batch_size,
                    thumbnails=thumbnails,
                    heartbeat_s=heartbeat_s,
                    resumed_from=resumed_from.get(s.name),
                    track_index=track_index,
                    threshold=None if threshold is None else threshold.value,
                    threshold_origin=None if threshold is None else threshold.origin,
                    recorded_at=s.recorded_at,
                    time_origin=s.time_origin,
                )
        except BaseException:
            self.close("failed")
            raise

    @property
    def run_ids(self) -> dict[str, int]:
        return {name: w.run_id for name, w in self.writers.items()}

    def media_paths(self, source_id: str, track_id: int) -> tuple[str | None, str | None]:
        """Store-relative paths of a track's best crop and context snapshot (see ``MatchLogWriter.media_paths``);
        ``(None, None)`` for a source this sink does not log."""
        writer = self.writers.get(source_id)
        return (None, None) if writer is None else writer.media_paths(track_id)

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        writer = self.writers[template.source_id]
        if (
            writer.closed
        ):  # the source's run was closed early (its camera actor died): late tracks have no run
            logger.warning(
                "match log: %s track %d after its run was closed; not logged",
                template.source_id,
                template.track_id,
            )
            return
        crop = template.best_crop
        frames = max(template.num_frames, 1)
        seen_start, seen_end = sighting_datetimes(template)
        origin = self.origins.get(template.source_id, "unknown")
        known = seen_end is not None and origin != "unknown"
        writer.record(
            TrackRecord(
                track_id=template.track_id,
                start_time=template.first_timestamp,
                end_time=template.last_timestamp,
                frames=frames,
                crops_embedded=min(template.num_crops, frames),
                template=template.embedding,
                embedder_id=self.embedder_id,
                candidates=result.candidates,
                decision=result.decision,
                threshold=result.threshold,
                thumbnail=None if crop is None else crop.image,
                scene=template.scene,
                boxes=template.boxes,
                seen_start=seen_start if known else None,
                seen_end=seen_end if known else None,
                time_origin=origin if known else "unknown",
                zones=template.zones,
            )
        )

    def progress(
        self, source_id: str, frames_done: int, last_timestamp: float | None, resume_at: float | None = None
    ) -> None:
        """Note how far a source got (committed with its next batch or heartbeat); a re-run of an interrupted
        source decodes from ``resume_at``."""
        writer = self.writers.get(source_id)
        if writer is not None:
            writer.progress(frames_done, last_timestamp, resume_at)

    def close_source(self, name: str, status: str) -> None:
        """End one source's run now (``failed`` when its camera process died); the others go on."""
        self.writers[name].close(status)

    def close(self, status: str = "finished") -> None:
        """Flush every writer still open and mark its run ``status``; every writer is closed even if one fails."""
        error: BaseException | None = None
        for writer in self.writers.values():
            try:
                writer.close(status)
            except Exception as exc:  # noqa: BLE001 - close the others, then raise the first
                logger.error("match log: closing run %d failed: %s", writer.run_id, exc)
                error = error or exc
        if error is not None:
            raise error
