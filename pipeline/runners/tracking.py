"""Per-source tracking, written once and driven by every runner (files, live cameras, Ray camera actors).

``SourceTracking`` (one per source: a ``Tracker``, a ``ShotCutDetector``, a ``CropSelector``, the source's zone
visits) turns a frame and its detections into aligned, quality-scored crops worth embedding (``TrackJob.crops``)
and confirmed tracks that ended (``EndedTrack``, with their boxes ``[K, 5]``, context snapshot and zones).
``detect``/``detect_and_track`` run the detector over a batch of frames of any sources and track each. The
embedding side that consumes the jobs is :mod:`pipeline.runners.engine`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.types import Detections, FaceCrop, Frame, SceneSnapshot
from pipeline.config import AppConfig
from pipeline.runners.selection import CropSelector
from stages.align import align_face
from stages.detect import FaceDetector
from stages.quality import QualityScorer
from stages.schedule import DetectionSchedule
from stages.shot import ShotCutDetector
from stages.track import TrackEnd, Tracker
from stages.zones import NO_ZONES, Zones, ZoneVisits

__all__ = [
    "EndedTrack",
    "RunStats",
    "SourceTracking",
    "TrackJob",
    "detect",
    "detect_and_track",
]

logger = logging.getLogger(__name__)

STAGES = ("decode_wait", "detect", "track", "crop", "embed", "match", "total")


@dataclass
class RunStats:
    """Counts and per-stage wall time (seconds) of a run; ``latencies_s``: for the latest tracks, seconds from the
    track's last frame to its result reaching the sinks (live runs, where frames carry the runner's clock)."""

    frames: int = 0
    batches: int = 0
    detections: int = 0
    tracks: int = 0
    matches: int = 0
    crops_embedded: int = 0
    closed_at_loss: int = 0
    progress_matches: int = 0
    decisive_stops: int = 0  # ended tracks whose match was decisive before all their crops were embedded
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=10000))

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


WALL_JITTER_S = 0.005  # a source's wall-clock offset is passed on again when it moved more than this


def detect(
    detector: FaceDetector,
    frames: Sequence[Frame],
    stats: RunStats,
    plans: Sequence[np.ndarray | None] | None = None,
) -> list[Detections]:
    """One detector call over a batch of frames (of any sources), timed into ``stats``; ``plans``: each frame's
    regions of interest from its source's :meth:`SourceTracking.plan` (None: the whole frame)."""
    t0 = time.perf_counter()
    detections = detector.detect([f.image for f in frames], plans)
    stats.add_time("detect", time.perf_counter() - t0)
    stats.batches += 1
    return detections


def detect_and_track(
    detector: FaceDetector,
    frames: Sequence[Frame],
    tracking: Callable[[Frame], SourceTracking],
    job: TrackJob,
    stats: RunStats,
) -> Iterator[tuple[Frame, Detections]]:
    """Detect and track ``frames`` (of any sources, each in its order) and yield each with its tracked detections;
    ``tracking(frame)`` is the frame's :class:`SourceTracking`. One detector call for all of them, or, where a
    source has a detection schedule (``detect.full_every`` > 1), one call per run of frames of different sources
    (so that each frame is planned from the tracks and faces of its source's frame before it, and the frames of
    several cameras still share a call, whose passes run side by side)."""
    if any(tracking(f).schedule.every > 1 for f in frames):
        groups = _one_per_source(frames, tracking)
    else:
        groups = [list(frames)] if frames else []
    for group in groups:
        plans = [tracking(f).plan(f) for f in group]
        for frame, dets in zip(group, detect(detector, group, stats, plans)):
            yield frame, tracking(frame).frame(frame, dets, job, stats)


def _one_per_source(
    frames: Sequence[Frame], tracking: Callable[[Frame], SourceTracking]
) -> list[list[Frame]]:
    """``frames`` in order, cut into runs in which no source (no :class:`SourceTracking`) has two frames."""
    groups: list[list[Frame]] = []
    seen: set[int] = set()
    for frame in frames:
        mine = id(tracking(frame))
        if not groups or mine in seen:
            groups.append([])
            seen = set()
        groups[-1].append(frame)
        seen.add(mine)
    return groups


@dataclass
class EndedTrack:
    """A confirmed track that ended, with what is still to embed for it; ``boxes``: its box on every frame, float32
    ``[K, 5]`` (t, x1, y1, x2, y2 in source pixels); ``scene``: the downscaled full frame of ``best``."""

    end: TrackEnd
    source_id: str
    frames: int
    best: FaceCrop | None
    pooled: list[tuple[FaceCrop, float]]
    boxes: np.ndarray | None = None
    scene: SceneSnapshot | None = None
    zones: tuple[str, ...] | None = None  # the source's zones it entered; None: it has none


@dataclass
class TrackJob:
    """Work for the embedding side: crops to embed now (with quality scores) and tracks that ended; ``walls``: per
    source, the wall clock minus the stream time of its frames when that changed (None: unknown), which dates the
    tracks; ``after`` is called once the job is handled, in order with the jobs queued before it."""

    crops: list[tuple[FaceCrop, float]] = field(default_factory=list)
    ends: list[EndedTrack] = field(default_factory=list)
    walls: dict[str, float | None] = field(default_factory=dict)
    after: Callable[[], None] | None = None


class SourceTracking:
    """Tracking, shot cuts and crop selection of one source. Track ids keep counting across stream losses, so a
    source never reports one twice; ``generation`` is the source's stream generation last seen (live runners).
    ``early`` (or ``runner.embed_early``): crops are embedded as they improve instead of only each track's best at
    its end (:mod:`pipeline.runners.selection`), for runs whose open tracks are watched
    (``engine.TrackMatching.watching``) or must survive the loss of this side (Ray camera actors)."""

    def __init__(self, cfg: AppConfig, source_id: str, early: bool = False, zones: Zones = NO_ZONES) -> None:
        self.source_id = source_id
        self.visits = ZoneVisits(zones)
        self.quality = QualityScorer(cfg.quality)
        self.tracker = Tracker(cfg.track)
        self.selector = CropSelector(cfg.runner, early or cfg.runner.embed_early)
        self.cuts = ShotCutDetector(cfg.shot)
        self.schedule = DetectionSchedule(cfg.detect)
        self._last_boxes = np.zeros((0, 4), np.float32)  # the previous frame's detections, tracked or not
        self.generation = 0
        self._wall: float | None = None  # wall clock minus stream time, as last put in a job
        self._wall_sent = False

    def plan(self, frame: Frame) -> np.ndarray | None:
        """Where to detect in ``frame`` (call in frame order, before detecting it): None for the whole frame, else
        the regions around the live tracks, the previous frame's faces and where the image moved
        (``detect.full_every``)."""
        return self.schedule.plan(frame.image, np.concatenate([self.tracker.boxes, self._last_boxes]))

    def frame(self, frame: Frame, dets: Detections, job: TrackJob, stats: RunStats) -> Detections:
        """Track one frame's detections; selected crops and ended tracks go into ``job``. Returns the tracked
        detections (``track_id`` -1 for faces not on a track)."""
        t0 = time.perf_counter()
        self._note_wall(frame, job)
        if self.cuts.is_cut(frame.image):  # edited footage: a hard cut ends every track
            logger.debug("%s: shot cut at frame %d, all tracks end", self.source_id, frame.index)
            job.ends.extend(self._finish(self.tracker.flush()))
        tracked = self.tracker.update(dets, frame.timestamp)
        self.visits.note(tracked, frame.image.shape)
        self._last_boxes = dets.xyxy
        confirmed = set(self.tracker.active_ids)
        t1 = time.perf_counter()
        for i in np.flatnonzero(tracked.track_id >= 0):
            image = align_face(frame.image, tracked.landmarks[i])
            q = self.quality.assess(image, tracked.xyxy[i], tracked.score[i], tracked.landmarks[i])
            crop = FaceCrop(frame.source_id, int(tracked.track_id[i]), frame.index, frame.timestamp, image, q)
            score = self.quality.score(q)
            usable, box = self.quality.usable(q), tracked.xyxy[i]
            if self.selector.offer(crop, score, usable, crop.track_id in confirmed, box, frame.image):
                job.crops.append((crop, score))
        job.ends.extend(self._finish(self.tracker.finished()))
        stats.add_time("track", t1 - t0)
        stats.add_time("crop", time.perf_counter() - t1)
        stats.frames += 1
        stats.detections += len(dets)
        return tracked

    def _note_wall(self, frame: Frame, job: TrackJob) -> None:
        """Put the frame's wall clock minus its stream time in ``job`` when it moved by more than ``WALL_JITTER_S``
        since the last one put (a file's never does; a camera's drifts): the embedding side dates tracks with it."""
        wall = None if frame.wall_time is None else frame.wall_time - frame.timestamp
        same = (wall is None) == (self._wall is None) and (
            wall is None or abs(wall - self._wall) <= WALL_JITTER_S
        )
        if not (self._wall_sent and same):
            job.walls[self.source_id] = self._wall = wall
            self._wall_sent = True

    def close_all(self) -> list[EndedTrack]:
        """End every open track (end of file, stream lost, run over)."""
        self.cuts.reset()
        self.schedule.reset()
        return self._finish(self.tracker.flush())

    def _finish(self, ended: list[TrackEnd]) -> list[EndedTrack]:
        out = []
        for end in ended:
            state, pooled = self.selector.finish(end.track_id, end.confirmed)
            if end.confirmed:
                boxes, scene = state.box_rows(), state.scene
                out.append(EndedTrack(end, self.source_id, state.frames, state.best, pooled, boxes, scene))
        return self.visits.label(ended, out)
