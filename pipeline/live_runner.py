"""The live runner: several cameras in one process, detection and embedding batched across cameras.

The calling thread takes the newest frames of every camera, detects faces in all of them in one batch, then
tracks, aligns, scores and selects crops per camera (``CameraTracking``: one ``Tracker``, ``ShotCutDetector``
and ``CropSelector`` each). An embedding thread (``EmbedWorker``) embeds the selected crops of all cameras
together and ``TrackMatching`` fuses them per track, matches each finished track and hands it to the sinks.
Sinks that watch open tracks (``ProgressSink``, the watchlist alerts) also get the running template's match each
time an embed batch adds crops to a track, so an alert does not wait for the track to end.
When a camera's stream is lost its open tracks are closed at once (and so reach the sinks); track ids stay
unique per camera across reconnects. ``run`` returns when ``stop`` is set, the duration is over, or every
camera has given up; it then finishes the open tracks and waits for the embedding thread. The Ray engine
(``pipeline/ray_engine.py``) uses the same three classes.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from stages.aggregate import Aggregator
from stages.align import align_face
from stages.detect import FaceDetector
from stages.embed import Embedder
from stages.match import Matcher
from stages.quality import QualityScorer
from stages.shot import ShotCutDetector
from stages.track import TrackEnd, Tracker

from .config import AppConfig
from .health import HealthRegistry
from .live import LiveCameras
from .selection import CropSelector
from .sinks import ResultSink
from core.types import Detections, FaceCrop, Frame, MatchResult, TrackTemplate

__all__ = ["CameraTracking", "EmbedWorker", "EndedTrack", "LiveRunner", "LiveStats", "ProgressSink", "TrackJob",
           "TrackMatching"]

logger = logging.getLogger(__name__)

_STOP = object()


@runtime_checkable
class ProgressSink(Protocol):
    """A result sink that also watches open tracks: ``on_progress`` gets the match of a track's running template
    after each embed batch that added crops to it (while ``watching`` is true); ``on_track`` still gets the
    final match once, when the track ends."""

    watching: bool

    def on_progress(self, template: TrackTemplate, result: MatchResult) -> None: ...


@dataclass
class LiveStats:
    """Counts of a live run; ``latencies_s``: for the latest tracks, seconds from the track's last frame being
    decoded to its result reaching the sinks (includes the tracker's ``max_lost_s`` wait)."""

    frames: int = 0
    batches: int = 0
    tracks: int = 0
    matches: int = 0
    closed_at_loss: int = 0
    crops_embedded: int = 0
    progress_matches: int = 0
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=10000))


@dataclass
class EndedTrack:
    """A confirmed track that ended, with what is still to embed for it."""

    end: TrackEnd
    source_id: str
    frames: int
    best: FaceCrop | None
    pooled: list[tuple[FaceCrop, float]]


@dataclass
class TrackJob:
    """Work for the embedding side: crops to embed now (with quality scores) and tracks that ended; ``after``
    is called once the job is handled, in order with the jobs queued before it."""

    crops: list[tuple[FaceCrop, float]]
    ends: list[EndedTrack]
    after: Callable[[], None] | None = None


class CameraTracking:
    """Per-camera tracking, shot cuts and crop selection: the file runner's stage classes, one set per camera.
    Track ids keep counting across stream losses, so a camera never reports one twice."""

    def __init__(self, cfg: AppConfig, source_id: str) -> None:
        self.source_id = source_id
        self.quality = QualityScorer(cfg.quality)
        self.tracker = Tracker(cfg.track)
        self.selector = CropSelector(cfg.runner)
        self.cuts = ShotCutDetector(cfg.shot)
        self.generation = 0

    def frame(self, frame: Frame, dets: Detections, job: TrackJob) -> None:
        """Track one frame's detections; selected crops and ended tracks go into ``job``."""
        if self.cuts.is_cut(frame.image):  # edited footage: a hard cut ends every track, as in file runs
            job.ends.extend(self._finish(self.tracker.flush()))
        tracked = self.tracker.update(dets, frame.timestamp)
        confirmed = set(self.tracker.active_ids)
        for i in np.flatnonzero(tracked.track_id >= 0):
            image = align_face(frame.image, tracked.landmarks[i])
            q = self.quality.assess(image, tracked.xyxy[i], tracked.score[i], tracked.landmarks[i])
            crop = FaceCrop(frame.source_id, int(tracked.track_id[i]), frame.index, frame.timestamp, image, q)
            score = self.quality.score(q)
            if self.selector.offer(crop, score, self.quality.usable(q), crop.track_id in confirmed):
                job.crops.append((crop, score))
        job.ends.extend(self._finish(self.tracker.finished()))

    def close_all(self) -> list[EndedTrack]:
        """End every open track (stream lost or run over)."""
        self.cuts.reset()
        return self._finish(self.tracker.flush())

    def _finish(self, ended: list[TrackEnd]) -> list[EndedTrack]:
        out = []
        for end in ended:
            state, pooled = self.selector.finish(end.track_id, end.confirmed)
            if end.confirmed:
                out.append(EndedTrack(end, self.source_id, state.frames, state.best, pooled))
        return out


class TrackMatching:
    """Embeds the crops of any cameras in one batch, fuses them per track, matches ended tracks, feeds sinks.
    ``clock`` gives the frames' time base (for the latency figures). When a sink watches open tracks
    (``ProgressSink``), every open track that got crops in a batch is matched on its running template and the
    result goes to those sinks' ``on_progress``."""

    def __init__(self, cfg: AppConfig, embedder: Embedder, matcher: Matcher, sinks: Sequence[ResultSink],
                 clock: Callable[[], float]) -> None:
        self.embedder = embedder
        self.matcher = matcher
        self.sinks = list(sinks)
        self.clock = clock
        self.aggregator = Aggregator(cfg.aggregate, embedder.dim)
        self.watchers = [s for s in self.sinks if isinstance(s, ProgressSink)]
        self._span: dict[tuple[str, int], list[float]] = {}  # open track -> [first, last] embedded crop time

    def handle(self, group: list[TrackJob], stats: LiveStats) -> None:
        todo = [c for job in group for c in job.crops] + [c for job in group for e in job.ends for c in e.pooled]
        if todo:
            feats, norms = self.embedder.embed([c.image for c, _ in todo])
            self.aggregator.add([c for c, _ in todo], feats, norms, [s for _, s in todo])
            stats.crops_embedded += len(todo)
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
                template.best_crop = done.best
                self._deliver(template, self.matcher.match(template), stats)
            if job.after is not None:
                job.after()

    def drop_source(self, source_id: str) -> int:
        """Forget the open tracks of a source that will send no ends (its process died); returns how many."""
        keys = [k for k in self._span if k[0] == source_id]
        for key in keys:
            del self._span[key]
            self.aggregator.pop(*key)
        return len(keys)

    def _progress(self, updated: list[tuple[str, int]], stats: LiveStats) -> None:
        """Match the running template of every open track that got crops now (tracks ending in this batch get
        their final match instead)."""
        watchers = [s for s in self.watchers if s.watching]
        if not watchers:
            return
        for key in updated:
            fusion = self.aggregator.state(*key)
            first, last = self._span[key]
            template = fusion.template(first, last, fusion.crops)
            result = self.matcher.match(template)
            stats.progress_matches += 1
            for sink in watchers:
                sink.on_progress(template, result)

    def _deliver(self, template: TrackTemplate, result: MatchResult, stats: LiveStats) -> None:
        stats.tracks += 1
        stats.matches += result.decision == "match"
        for sink in self.sinks:
            sink.on_track(template, result)
        stats.latencies_s.append(self.clock() - template.last_timestamp)


class EmbedWorker:
    """A thread feeding queued jobs to ``TrackMatching`` in batches of about ``batch_size`` crops."""

    def __init__(self, matching: TrackMatching, batch_size: int, queue_size: int, stats: LiveStats) -> None:
        self.matching = matching
        self.batch_size = batch_size
        self.stats = stats
        self.failure: list[BaseException] = []
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="embed", daemon=True)
        self._thread.start()

    def put(self, job: TrackJob) -> None:
        if job.crops or job.ends or job.after is not None:
            self._jobs.put(job)  # blocks while embedding is behind: back-pressure

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
            except Exception as exc:
                logger.exception("embedding failed")
                self.failure.append(exc)


class LiveRunner:
    """Runs the stages over live cameras until stopped; every finished, confirmed track goes to the sinks."""

    def __init__(self, cfg: AppConfig, detector: FaceDetector, embedder: Embedder, matcher: Matcher,
                 sinks: Sequence[ResultSink], cameras: LiveCameras, registry: HealthRegistry) -> None:
        self.cfg = cfg
        self.detector = detector
        self.cameras = cameras
        self.registry = registry
        self.matching = TrackMatching(cfg, embedder, matcher, sinks, cameras.now)
        self.state = {s.name: CameraTracking(cfg, s.name) for s in cameras.sources}

    def run(self, stop: threading.Event, duration_s: float | None = None,
            status_interval_s: float = 0.0) -> LiveStats:
        stats = LiveStats()
        worker = EmbedWorker(self.matching, self.cfg.embed.batch_size, self.cfg.runner.queue_size, stats)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_status = time.monotonic() + status_interval_s
        self.cameras.start()
        reason = "every camera has given up"
        try:
            while not worker.failure and self.cameras.alive:
                if stop.is_set():
                    reason = "stop requested"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    reason = f"duration of {duration_s}s over"
                    break
                self.cameras.wait(0.1)
                job = TrackJob([], self._close_lost_streams(stats))
                frames = self.cameras.poll()
                if frames:
                    self._process(frames, stats, job)
                worker.put(job)  # blocks while embedding is behind; the cameras drop frames meanwhile
                if status_interval_s and time.monotonic() >= next_status:
                    logger.info("status: %s", self.registry.status_line())
                    next_status = time.monotonic() + status_interval_s
        finally:
            logger.info("live run ends (%s): finishing open tracks", "failure" if worker.failure else reason)
            self.cameras.stop()
            worker.put(TrackJob([], [e for cam in self.state.values() for e in cam.close_all()]))
            worker.close()
        return stats

    def _close_lost_streams(self, stats: LiveStats) -> list[EndedTrack]:
        ends = []
        for source in self.cameras.sources:
            cam = self.state[source.name]
            if source.generation != cam.generation:
                cam.generation = source.generation
                closed = cam.close_all()
                logger.warning("camera %s: stream lost, %d open tracks closed", source.name, len(closed))
                stats.closed_at_loss += len(closed)
                ends += closed
        return ends

    def _process(self, frames: list[Frame], stats: LiveStats, job: TrackJob) -> None:
        size = self.cfg.detect.batch_size
        for start in range(0, len(frames), size):
            batch = frames[start:start + size]
            detections = self.detector.detect([f.image for f in batch])
            stats.batches += 1
            for frame, dets in zip(batch, detections):
                self.state[frame.source_id].frame(frame, dets, job)
                self.registry.cameras[frame.source_id].frame_processed()
                stats.frames += 1
