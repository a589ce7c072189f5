"""The Python API: build the system once from a config, then recognize images, process videos, enroll people.

    from pipeline.api import FaceRecognition

    with FaceRecognition("configs/test.yaml", db="sqlite:///faces.db") as fr:
        fr.enroll("Rachel", ["rachel.jpg"], exist_ok=True)  # a second run adds nothing
        for face in fr.recognize(cv2.imread("photo.jpg")):
            print(face.box, face.identity, face.score)
        for track in fr.process("clip.mp4"):
            print(track.start, track.end, track.identity, track.score)

The command line is a thin layer over the same builder and runners, so both give the same results and store the
same templates (same ``embedder_id``) in the same database.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.images import read_image
from core.types import MatchResult, TrackTemplate
from gallery.content import content_key
from gallery.enroll import EnrollReport
from gallery.runs import replace_runs
from gallery.thumbnails import ThumbnailStore
from pipeline.build import build, find_faces
from pipeline.config import AppConfig, load_config
from pipeline.runners.runner import FileRunner
from pipeline.runners.sources import FileSource
from pipeline.sinks.outputs import logged_ref, sighting_datetimes
from pipeline.sinks.sql_gallery import LoggedSource
from stages.quality import QualityScorer

__all__ = ["Face", "FaceRecognition", "Track"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Face:
    """One face of an image: ``box`` (x1, y1, x2, y2 px), detector score, quality score, the open-set decision."""

    box: tuple[float, float, float, float]
    det_score: float
    quality: float
    identity: str | None
    score: float | None
    result: MatchResult


@dataclass(frozen=True)
class Track:
    """A finished face track of a video: its reference in the match log (``RUN:TRACK``), time span within the file
    (s), who (None: unknown), best score, the fused template; ``seen_start``/``seen_end``: when it was seen (wall
    clock, None when the file's recording time is unknown)."""

    source: str
    track_id: int
    start: float
    end: float
    identity: str | None
    score: float | None
    template: TrackTemplate
    result: MatchResult
    ref: str | None = None
    seen_start: datetime | None = None
    seen_end: datetime | None = None


def _track(template: TrackTemplate, result: MatchResult, run_ids: dict[str, int]) -> Track:
    best = result.candidates[0].score if result.candidates else None
    who = result.identity.name if result.identity else None
    seen = sighting_datetimes(template)
    return Track(
        template.source_id,
        template.track_id,
        template.first_timestamp,
        template.last_timestamp,
        who,
        best,
        template,
        result,
        logged_ref(run_ids, template),
        *seen,
    )


class _QueueSink:
    def __init__(self, out: queue.Queue, run_ids: dict[str, int]) -> None:
        self.out = out
        self.run_ids = run_ids

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        self.out.put(_track(template, result, self.run_ids))

    def close(self) -> None:
        """Nothing to flush."""


class FaceRecognition:
    """The whole system built once from a config (a path, None for the packaged default, or an ``AppConfig``):
    detector, embedder, the SQL gallery of ``db`` (default ``gallery.db_url``) and its matcher."""

    def __init__(
        self,
        config: str | Path | AppConfig | None = None,
        overrides: Sequence[str] = (),
        db: str | None = None,
    ) -> None:
        cfg = config if isinstance(config, AppConfig) else load_config(config, overrides)
        self.system = build(cfg, db_url=db or cfg.gallery.db_url)
        self._scorer = QualityScorer(cfg.quality)

    def __enter__(self) -> FaceRecognition:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.system.close()

    def recognize(self, image: np.ndarray | str | Path) -> list[Face]:
        """Every face of a BGR uint8 image (or an image file), each matched against the gallery."""
        image = _read(image)
        system = self.system
        found = find_faces(system.detector, self._scorer, image)
        if not found:
            return []
        feats, _ = system.embedder.embed([crop for _, _, crop, _ in found])
        matcher = system.matcher()
        faces = []
        for i, ((box, det_score, _, quality), feat) in enumerate(zip(found, feats)):
            result = matcher.match(TrackTemplate("image", i, feat, 1.0, 1, None, 0.0, 0.0, 1))
            best = result.candidates[0].score if result.candidates else None
            who = result.identity.name if result.identity else None
            faces.append(Face(tuple(float(v) for v in box), det_score, quality, who, best, result))
        return faces

    def process(self, video: str | Path, recorded_at: datetime | None = None) -> Iterator[Track]:
        """The finished tracks of a video file as they end, each also written to the match log (one run).
        ``recorded_at``: the wall clock of its first frame (timezone-aware) when the file does not say it. A file is
        logged once: when the run finishes, it replaces the earlier runs of the same file (by content, under any
        path), as ``process --reprocess`` does."""
        system = self.system
        source = FileSource(Path(video), system.cfg.source, recorded_at=recorded_at)
        out: queue.Queue = queue.Queue(maxsize=64)
        logged = LoggedSource(
            source.source_id,
            "file",
            str(source.path.resolve()),
            source.recorded_at,
            source.time_origin,
            content_key=content_key(source.path),
        )
        index = system.index()  # one threshold: the one decided at is the one stored on the run
        log = system.match_log([logged], threshold=index.in_force)
        runner = FileRunner(
            system.cfg,
            system.detector,
            system.embedder,
            system.matcher(index),
            [log, _QueueSink(out, log.run_ids)],
        )
        failure: list[BaseException] = []
        done = object()

        def work() -> None:
            try:
                runner.run([source])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failure.append(exc)
            finally:
                out.put(done)

        thread = threading.Thread(target=work, name="process", daemon=True)
        thread.start()
        status = "failed"
        try:
            while (item := out.get()) is not done:
                yield item
            if failure:
                raise failure[0]
            status = "finished"
        finally:
            runner.stop()
            while thread.is_alive():  # let the runner finish its open tracks without blocking on a full queue
                try:
                    out.get(timeout=0.1)
                except queue.Empty:
                    pass
            log.close(status)
        store = ThumbnailStore.for_database(system.gallery.db, system.gallery.config)
        replaced = replace_runs(system.gallery.db, log.run_ids[source.source_id], store, system.track_indexes)
        if replaced:
            logger.info(
                "%s: run %s replaces runs %s of the same file", video, log.run_ids[source.source_id], replaced
            )

    def enroll(
        self, name: str, images: Sequence[str | Path], add: bool = False, exist_ok: bool = False
    ) -> EnrollReport:
        """Enroll ``name`` from image files (content-hash idempotent: an image enrolled already is a no-op). A new
        identity, unless ``add`` (extend an existing one) or ``exist_ok`` (either: a script that runs again)."""
        return self.system.enroller().enroll_images(
            name, [Path(p) for p in images], add=add, exist_ok=exist_ok
        )

    def enroll_tracks(
        self, name: str, refs: Sequence[str], add: bool = False, force: bool = False
    ) -> EnrollReport:
        """Enroll ``name`` from logged tracks, each named ``"RUN:TRACK"`` (the ``ref`` of ``query tracks``; a bare
        number raises :class:`gallery.refs.TrackRefError`). A track matched to someone else, or scoring below the
        operating threshold against ``name``'s templates, raises :class:`gallery.from_tracks.DoubtfulTrackError`
        and enrolls nothing, unless ``force``."""
        threshold = self.system.index().threshold
        return self.system.enroller().enroll_tracks(
            name, list(refs), add=add, threshold=threshold, force=force
        )


def _read(image: np.ndarray | str | Path) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image: expected a BGR uint8 HxWx3 array, got {image.dtype} {image.shape}")
        return image
    return read_image(image)[1]  # the one pixel cap, before decoding
