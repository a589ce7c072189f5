"""The per-track core, written once and driven by every runner (files, live cameras, Ray actors).

``SourceTracking`` (one per source: a ``Tracker``, a ``ShotCutDetector``, a ``CropSelector``) turns a frame and
its detections into aligned, quality-scored crops worth embedding and tracks that ended. ``TrackMatching`` embeds
the selected crops of any sources in one batch, fuses them per track (``Aggregator``), matches every ended track
and hands it to the sinks; sinks that watch open tracks (``ProgressSink``) also get the running template's match
whenever an embed batch adds crops to a track. ``EmbedWorker`` is the thread between them: jobs queue up to
``queue_size`` (back-pressure on detection) and are handled in batches of about ``batch_size`` crops.

The runners differ only in where frames come from and how work is scheduled: ``pipeline.runners.runner`` (files),
``pipeline.runners.live_runner`` (cameras in one process), ``pipeline.live.ray_engine`` (an actor per camera).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from core.types import Detections, FaceCrop, Frame, MatchResult, SceneSnapshot, TrackTemplate
from pipeline.config import AppConfig
from pipeline.runners.selection import CropSelector
from pipeline.sinks.outputs import ResultSink
from stages.aggregate import Aggregator
from stages.align import align_face
from stages.detect import FaceDetector
from stages.embed import Embedder
from stages.match import Matcher
from stages.quality import QualityScorer
from stages.schedule import DetectionSchedule
from stages.shot import ShotCutDetector
from stages.track import TrackEnd, Tracker
from stages.zones import NO_ZONES, Zones, ZoneVisits

__all__ = [
    "detect_and_track",
    "EmbedWorker",
    "EndedTrack",
    "ProgressSink",
    "RunStats",
    "SourceTracking",
    "TrackJob",
    "TrackMatching",
    "detect",
]

logger = logging.getLogger(__name__)

_STOP = object()
STAGES = ("decode_wait", "detect", "track", "crop", "embed", "match", "total")


@runtime_checkable
class ProgressSink(Protocol):
    """A result sink that also watches open tracks: ``on_progress`` gets the match of a track's running template
    after each embed batch that added crops to it (while ``watching`` is true); ``on_track`` still gets the
    final match once, when the track ends."""

    watching: bool

    def on_progress(self, template: TrackTemplate, result: MatchResult) -> None: ...


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
    source has a detection schedule (``detect.full_every`` > 1), one frame at a time, so that each frame is
    planned from the tracks and faces of the frame before it."""
    scheduled = any(tracking(f).schedule.every > 1 for f in frames)
    for group in [[f] for f in frames] if scheduled else [list(frames)]:
        plans = [tracking(f).plan(f) for f in group]
        for frame, dets in zip(group, detect(detector, group, stats, plans)):
            yield frame, tracking(frame).frame(frame, dets, job, stats)


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
    its end (:mod:`pipeline.runners.selection`), for runs whose open tracks are watched (:attr:`TrackMatching.watching`)
    or must survive the loss of this side (Ray camera actors)."""

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


class TrackMatching:
    """Embeds the crops of any sources in one batch, fuses them per track, matches ended tracks, feeds sinks.
    ``clock`` gives the frames' time base for the latency figures (None: no latency, e.g. files). When a sink
    watches open tracks (``ProgressSink``), every open track that got crops in a batch is matched on its running
    template and the result goes to those sinks' ``on_progress``. ``logged(source_id, track_id)``: whether the
    match log holds a track already (a camera replayed it to a restarted Ray service); such a track is matched but
    delivered to no sink, and counted in ``skipped``."""

    def __init__(
        self,
        cfg: AppConfig,
        embedder: Embedder,
        matcher: Matcher,
        sinks: Sequence[ResultSink],
        clock: Callable[[], float] | None = None,
        logged: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.embedder = embedder
        self.matcher = matcher
        self.sinks = list(sinks)
        self.clock = clock
        self.logged = logged
        self.skipped = 0
        self.aggregator = Aggregator(cfg.aggregate, embedder.dim)
        self.watchers = [s for s in self.sinks if isinstance(s, ProgressSink)]
        self._span: dict[tuple[str, int], list[float]] = {}  # open track -> [first, last] embedded crop time
        self._wall: dict[str, float | None] = {}  # source -> wall clock minus stream time, as last reported

    @property
    def watching(self) -> bool:
        """True when a sink watches open tracks: their crops are then worth embedding before they end."""
        return any(s.watching for s in self.watchers)

    def handle(self, group: list[TrackJob], stats: RunStats) -> None:
        todo = [c for job in group for c in job.crops] + [
            c for job in group for e in job.ends for c in e.pooled
        ]
        for job in group:
            self._wall.update(job.walls)
        t0 = time.perf_counter()
        if todo:
            feats, norms = self.embedder.embed([c.image for c, _ in todo])
            self.aggregator.add([c for c, _ in todo], feats, norms, [s for _, s in todo])
            stats.crops_embedded += len(todo)
        t1 = time.perf_counter()
        stats.add_time("embed", t1 - t0)
        updated: dict[tuple[str, int], None] = {}
        for crop, _ in todo:
            key = (crop.source_id, crop.track_id)
            span = self._span.setdefault(key, [crop.timestamp, crop.timestamp])
            span[0], span[1] = min(span[0], crop.timestamp), max(span[1], crop.timestamp)
            updated[key] = None
        ending = {(e.source_id, e.end.track_id) for job in group for e in job.ends}
        self._progress([k for k in updated if k not in ending], stats)
        for job in group:
            for done in job.ends:
                key = (done.source_id, done.end.track_id)
                self._span.pop(key, None)
                fusion = self.aggregator.pop(*key)
                template = fusion.template(done.end.first_seen, done.end.last_seen, done.frames)
                template.best_crop, template.boxes, template.scene = done.best, done.boxes, done.scene
                template.zones = done.zones
                self._set_wall(template)
                self._deliver(template, self.matcher.match(template), stats)
            if job.after is not None:
                job.after()
        stats.add_time("match", time.perf_counter() - t1)

    def close_source(self, source_id: str, up_to: int, stats: RunStats) -> int:
        """End the open tracks of ``source_id`` with ids up to ``up_to`` (a dead camera actor's; its successor's
        ids are higher): each is fused from the crops embedded so far, ends at its last embedded crop's time, is
        matched and delivered once. Returns how many."""
        keys = [k for k in self._span if k[0] == source_id and k[1] <= up_to]
        for key in keys:
            first, last = self._span.pop(key)
            fusion = self.aggregator.pop(*key)
            template = fusion.template(first, last, max(fusion.crops, 1))
            self._set_wall(template)
            self._deliver(template, self.matcher.match(template), stats)
        stats.closed_at_loss += len(keys)
        return len(keys)

    def _set_wall(self, template: TrackTemplate) -> None:
        """The wall clock of the track's first and last frame, from its source's latest known offset."""
        offset = self._wall.get(template.source_id)
        if offset is not None:
            template.wall_start = template.first_timestamp + offset
            template.wall_end = template.last_timestamp + offset

    def _progress(self, updated: list[tuple[str, int]], stats: RunStats) -> None:
        """Match the running template of every open track that got crops now (tracks ending in this batch get
        their final match instead)."""
        watchers = [s for s in self.watchers if s.watching]
        if not watchers:
            return
        for key in updated:
            fusion = self.aggregator.state(*key)
            first, last = self._span[key]
            template = fusion.template(first, last, fusion.crops)
            self._set_wall(template)
            result = self.matcher.match(template)
            stats.progress_matches += 1
            for sink in watchers:
                sink.on_progress(template, result)

    def _deliver(self, template: TrackTemplate, result: MatchResult, stats: RunStats) -> None:
        if self.logged is not None and self.logged(template.source_id, template.track_id):
            self.skipped += 1
            logger.debug("%s track %d: in the match log already", template.source_id, template.track_id)
            return
        stats.tracks += 1
        stats.matches += result.decision == "match"
        for sink in self.sinks:
            sink.on_track(template, result)
        if self.clock is not None:
            stats.latencies_s.append(self.clock() - template.last_timestamp)


class EmbedWorker:
    """A thread feeding queued jobs to ``TrackMatching`` in batches of about ``batch_size`` crops. A failure stops
    the work (later jobs are drained unhandled) and is re-raised by ``close``; ``failure`` tells the feeding
    thread to stop early."""

    def __init__(self, matching: TrackMatching, batch_size: int, queue_size: int, stats: RunStats) -> None:
        self.matching = matching
        self.batch_size = batch_size
        self.stats = stats
        self.failure: list[Exception] = []
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="embed", daemon=True)
        self._thread.start()

    def put(self, job: TrackJob) -> None:
        if job.crops or job.ends or job.walls or job.after is not None:
            self._jobs.put(job)  # blocks while embedding is behind: back-pressure, bounded memory

    def close(self) -> None:
        """Finish the queued jobs; re-raises an embedding failure."""
        self._jobs.put(_STOP)
        self._thread.join()
        if self.failure:
            raise self.failure[0]

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group = [self._jobs.get()]
            if group[0] is _STOP:
                return
            while sum(len(j.crops) for j in group) < self.batch_size:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                group.append(nxt)
            if self.failure:
                continue  # drain without work; the failure is raised by close
            try:
                self.matching.handle(group, self.stats)
            except Exception as exc:  # noqa: BLE001 - handed to the feeding thread through close()
                logger.debug("embedding failed: %s", exc)
                self.failure.append(exc)
