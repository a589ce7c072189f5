"""The live runner: several cameras in one process, detection and embedding batched across cameras.

The calling thread takes the newest frame of every camera, detects faces in all of them in one batch, then
tracks, aligns, scores and selects crops per camera (one ``Tracker``, ``ShotCutDetector`` and ``CropSelector``
each). An embedding thread embeds the selected crops of all cameras together, fuses them per track and matches
each finished track, handing it to the sinks. When a camera's stream is lost, its open tracks are closed at once (and so reach the
sinks); track ids stay unique per camera across reconnects. ``run`` returns when ``stop`` is set, the duration
is over, or every camera has given up; it then finishes the open tracks and waits for the embedding thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from stages.aggregate import Aggregator
from stages.align import align_face
from stages.detect import FaceDetector
from stages.embed import Embedder
from stages.match import Matcher
from stages.quality import QualityScorer
from stages.shot import ShotCutDetector
from stages.track import Tracker, TrackEnd

from .config import AppConfig
from .health import HealthRegistry
from .live import LiveCameras
from .selection import CropSelector
from .sinks import ResultSink
from .types import FaceCrop, Frame, MatchResult, TrackTemplate

__all__ = ["LiveRunner", "LiveStats"]

logger = logging.getLogger(__name__)

_STOP = object()


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
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=10000))


@dataclass
class _Ended:
    end: TrackEnd
    source_id: str
    frames: int
    best: FaceCrop | None
    pooled: list[tuple[FaceCrop, float]]


@dataclass
class _Job:
    crops: list[tuple[FaceCrop, float]]
    ends: list[_Ended]


class _Camera:
    """Per-camera stream state of the runner."""

    def __init__(self, cfg: AppConfig) -> None:
        self.tracker = Tracker(cfg.track)
        self.selector = CropSelector(cfg.runner)
        self.cuts = ShotCutDetector(cfg.shot)
        self.generation = 0

    def finish(self, source_id: str, ended: list[TrackEnd]) -> list[_Ended]:
        out = []
        for end in ended:
            state, pooled = self.selector.finish(end.track_id, end.confirmed)
            if end.confirmed:
                out.append(_Ended(end, source_id, state.frames, state.best, pooled))
        return out


class LiveRunner:
    """Runs the stages over live cameras until stopped; every finished, confirmed track goes to the sinks."""

    def __init__(self, cfg: AppConfig, detector: FaceDetector, embedder: Embedder, matcher: Matcher,
                 sinks: Sequence[ResultSink], cameras: LiveCameras, registry: HealthRegistry) -> None:
        self.cfg = cfg
        self.detector = detector
        self.embedder = embedder
        self.matcher = matcher
        self.sinks = list(sinks)
        self.cameras = cameras
        self.registry = registry
        self.quality = QualityScorer(cfg.quality)
        self.state = {s.name: _Camera(cfg) for s in cameras.sources}

    def run(self, stop: threading.Event, duration_s: float | None = None,
            status_interval_s: float = 0.0) -> LiveStats:
        stats = LiveStats()
        jobs: queue.Queue = queue.Queue(maxsize=self.cfg.runner.queue_size)
        aggregator = Aggregator(self.cfg.aggregate, self.embedder.dim)
        failure: list[BaseException] = []
        worker = threading.Thread(target=self._embed_worker, args=(jobs, aggregator, stats, failure),
                                  name="embed", daemon=True)
        worker.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_status = time.monotonic() + status_interval_s
        self.cameras.start()
        reason = "every camera has given up"
        try:
            while not failure and self.cameras.alive:
                if stop.is_set():
                    reason = "stop requested"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    reason = f"duration of {duration_s}s over"
                    break
                self.cameras.wait(0.1)
                ends = self._close_lost_streams(stats)
                frames = self.cameras.poll()
                job = self._process(frames, stats) if frames else _Job([], [])
                job.ends.extend(ends)
                if job.crops or job.ends:
                    jobs.put(job)  # blocks while embedding is behind; the cameras drop frames meanwhile
                if status_interval_s and time.monotonic() >= next_status:
                    logger.info("status: %s", self.registry.status_line())
                    next_status = time.monotonic() + status_interval_s
        finally:
            logger.info("live run ends (%s): finishing open tracks", "failure" if failure else reason)
            self.cameras.stop()
            ends = [e for name, cam in self.state.items() for e in cam.finish(name, cam.tracker.flush())]
            jobs.put(_Job([], ends))
            jobs.put(_STOP)
            worker.join()
        if failure:
            raise failure[0]
        return stats

    def _close_lost_streams(self, stats: LiveStats) -> list[_Ended]:
        ends = []
        for source in self.cameras.sources:
            cam = self.state[source.name]
            if source.generation != cam.generation:
                cam.generation = source.generation
                cam.cuts.reset()
                closed = cam.finish(source.name, cam.tracker.flush())
                logger.warning("camera %s: stream lost, %d open tracks closed", source.name, len(closed))
                stats.closed_at_loss += len(closed)
                ends += closed
        return ends

    def _process(self, frames: list[Frame], stats: LiveStats) -> _Job:
        job = _Job([], [])
        size = self.cfg.detect.batch_size
        for start in range(0, len(frames), size):
            batch = frames[start:start + size]
            detections = self.detector.detect([f.image for f in batch])
            stats.batches += 1
            for frame, dets in zip(batch, detections):
                self._track(frame, dets, job)
                self.registry.cameras[frame.source_id].frame_processed()
                stats.frames += 1
        return job

    def _track(self, frame: Frame, dets, job: _Job) -> None:
        cam = self.state[frame.source_id]
        if cam.cuts.is_cut(frame.image):  # edited footage: a hard cut ends every track, as in file runs
            job.ends.extend(cam.finish(frame.source_id, cam.tracker.flush()))
        tracked = cam.tracker.update(dets, frame.timestamp)
        confirmed = set(cam.tracker.active_ids)
        for i in np.flatnonzero(tracked.track_id >= 0):
            image = align_face(frame.image, tracked.landmarks[i])
            q = self.quality.assess(image, tracked.xyxy[i], tracked.score[i], tracked.landmarks[i])
            crop = FaceCrop(frame.source_id, int(tracked.track_id[i]), frame.index, frame.timestamp, image, q)
            score = self.quality.score(q)
            if cam.selector.offer(crop, score, self.quality.usable(q), crop.track_id in confirmed):
                job.crops.append((crop, score))
        job.ends.extend(cam.finish(frame.source_id, cam.tracker.finished()))

    def _embed_worker(self, jobs: queue.Queue, aggregator: Aggregator, stats: LiveStats,
                      failure: list[BaseException]) -> None:
        stopping = False
        while not stopping:
            group = [jobs.get()]
            if group[0] is _STOP:
                return
            while sum(len(j.crops) for j in group) < self.cfg.embed.batch_size:
                try:
                    nxt = jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                group.append(nxt)
            if failure:
                continue
            try:
                self._embed_group(group, aggregator, stats)
            except Exception as exc:  # handed to the detecting thread, which stops and re-raises it
                logger.exception("embedding failed")
                failure.append(exc)

    def _embed_group(self, group: list[_Job], aggregator: Aggregator, stats: LiveStats) -> None:
        todo = [c for job in group for c in job.crops] + [c for job in group for e in job.ends for c in e.pooled]
        if todo:
            feats, norms = self.embedder.embed([c.image for c, _ in todo])
            aggregator.add([c for c, _ in todo], feats, norms, [s for _, s in todo])
            stats.crops_embedded += len(todo)
        for job in group:
            for done in job.ends:
                fusion = aggregator.pop(done.source_id, done.end.track_id)
                template = fusion.template(done.end.first_seen, done.end.last_seen, done.frames)
                template.best_crop = done.best
                result = self.matcher.match(template)
                self._deliver(template, result, stats)

    def _deliver(self, template: TrackTemplate, result: MatchResult, stats: LiveStats) -> None:
        stats.tracks += 1
        stats.matches += result.decision == "match"
        for sink in self.sinks:
            sink.on_track(template, result)
        stats.latencies_s.append(self.cameras.now() - template.last_timestamp)
