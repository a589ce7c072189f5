"""The single-process runner: decode -> detect -> track -> align + quality -> select -> embed -> fuse -> match.

Three threads joined by bounded queues: the source decodes ahead (``source.queue_size`` frames), the calling
thread detects, tracks and selects crops, and an embedding worker embeds the selected crops of several frames
and tracks in one batch, fuses them and matches finished tracks. When embedding is slower, the queue between
them fills and detection waits; memory stays bounded.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

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
from .selection import CropSelector
from .sinks import ResultSink
from .sources import DecodeReport, FileSource
from core.types import FaceCrop, Frame, MatchResult, TrackTemplate

__all__ = ["FrameBoxes", "RunStats", "Runner"]

logger = logging.getLogger(__name__)

_STOP = object()


@dataclass
class FrameBoxes:
    """Tracked boxes of one processed frame (kept only when an annotated video is asked for)."""

    index: int
    timestamp: float
    xyxy: np.ndarray
    track_id: np.ndarray


@dataclass
class RunStats:
    """Counts and per-stage wall time (seconds) of one run."""

    frames: int = 0
    detections: int = 0
    crops_embedded: int = 0
    tracks: int = 0
    matches: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("decode_wait", "detect", "track", "crop", "embed", "match", "total"), 0.0))
    video_seconds: float = 0.0
    decode: dict[str, DecodeReport] = field(default_factory=dict)
    boxes: dict[str, list[FrameBoxes]] = field(default_factory=dict)
    results: list[tuple[TrackTemplate, MatchResult]] = field(default_factory=list)

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


@dataclass
class _TrackDone:
    source_id: str
    end: TrackEnd
    frames: int
    best: FaceCrop | None
    pooled: list[tuple[FaceCrop, float]]


@dataclass
class _EmbedJob:
    crops: list[tuple[FaceCrop, float]]
    ends: list[_TrackDone]


class Runner:
    """Runs the stages over one or more sources and hands every finished, confirmed track to the sinks."""

    def __init__(self, cfg: AppConfig, detector: FaceDetector, embedder: Embedder, matcher: Matcher,
                 sinks: Sequence[ResultSink], keep_boxes: bool = False,
                 progress: Callable[[RunStats, int], None] | None = None) -> None:
        self.cfg = cfg
        self.detector = detector
        self.embedder = embedder
        self.matcher = matcher
        self.sinks = list(sinks)
        self.keep_boxes = keep_boxes
        self.progress = progress
        self.quality = QualityScorer(cfg.quality)

    def run(self, sources: Iterable[FileSource]) -> RunStats:
        stats = RunStats()
        start = time.perf_counter()
        for source in sources:
            self._run_source(source, stats)
        stats.seconds["total"] = time.perf_counter() - start
        return stats

    def _run_source(self, source: FileSource, stats: RunStats) -> None:
        jobs: queue.Queue = queue.Queue(maxsize=self.cfg.runner.queue_size)
        aggregator = Aggregator(self.cfg.aggregate, self.embedder.dim)
        failure: list[BaseException] = []
        worker = threading.Thread(target=self._embed_worker, args=(jobs, aggregator, stats, failure),
                                  name="embed", daemon=True)
        worker.start()
        try:
            self._detect_loop(source, stats, jobs, failure)
        finally:
            jobs.put(_STOP)
            worker.join()
        stats.decode[source.source_id] = source.report
        if failure:
            raise failure[0]

    def _detect_loop(self, source: FileSource, stats: RunStats, jobs: queue.Queue,
                     failure: list[BaseException]) -> None:
        tracker = Tracker(self.cfg.track)
        cuts = ShotCutDetector(self.cfg.shot)
        selector = CropSelector(self.cfg.runner)
        boxes = stats.boxes.setdefault(source.source_id, []) if self.keep_boxes else None
        batch: list[Frame] = []
        frames = iter(source)
        done = False
        last_t = 0.0
        while not done:
            t0 = time.perf_counter()
            try:
                batch.append(next(frames))
            except StopIteration:
                done = True
            stats.add_time("decode_wait", time.perf_counter() - t0)
            if batch and (done or len(batch) >= self.cfg.detect.batch_size):
                if failure:
                    return
                job = self._process_batch(batch, tracker, cuts, selector, stats, boxes)
                last_t = batch[-1].timestamp
                self._put(jobs, job)
                batch = []
        ends = self._finish(source.source_id, tracker.flush(), selector)
        self._put(jobs, _EmbedJob([], ends))
        stats.video_seconds += max(0.0, last_t - source.cfg.start)

    def _put(self, jobs: queue.Queue, job: _EmbedJob) -> None:
        jobs.put(job)  # blocks while the embedding worker is behind: back-pressure, bounded memory

    def _process_batch(self, batch: list[Frame], tracker: Tracker, cuts: ShotCutDetector, selector: CropSelector,
                       stats: RunStats, boxes: list[FrameBoxes] | None) -> _EmbedJob:
        t0 = time.perf_counter()
        detections = self.detector.detect([f.image for f in batch])
        stats.add_time("detect", time.perf_counter() - t0)
        job = _EmbedJob([], [])
        for frame, dets in zip(batch, detections):
            t1 = time.perf_counter()
            if cuts.is_cut(frame.image):
                logger.debug("shot cut at frame %d: all tracks end", frame.index)
                job.ends.extend(self._finish(frame.source_id, tracker.flush(), selector))
            tracked = tracker.update(dets, frame.timestamp)
            confirmed = set(tracker.active_ids)
            stats.add_time("track", time.perf_counter() - t1)
            t2 = time.perf_counter()
            for i in np.flatnonzero(tracked.track_id >= 0):
                image = align_face(frame.image, tracked.landmarks[i])
                q = self.quality.assess(image, tracked.xyxy[i], tracked.score[i], tracked.landmarks[i])
                crop = FaceCrop(frame.source_id, int(tracked.track_id[i]), frame.index, frame.timestamp, image, q)
                score = self.quality.score(q)
                if selector.offer(crop, score, self.quality.usable(q), crop.track_id in confirmed):
                    job.crops.append((crop, score))
            job.ends.extend(self._finish(frame.source_id, tracker.finished(), selector))
            stats.add_time("crop", time.perf_counter() - t2)
            stats.frames += 1
            stats.detections += len(dets)
            if boxes is not None:
                keep = tracked.track_id >= 0
                boxes.append(FrameBoxes(frame.index, frame.timestamp, tracked.xyxy[keep], tracked.track_id[keep]))
        if self.progress is not None:
            self.progress(stats, len(batch))
        return job

    @staticmethod
    def _finish(source_id: str, ended: list[TrackEnd], selector: CropSelector) -> list[_TrackDone]:
        out = []
        for end in ended:
            state, pooled = selector.finish(end.track_id, end.confirmed)
            if end.confirmed:
                out.append(_TrackDone(source_id, end, state.frames, state.best, pooled))
        return out

    def _embed_worker(self, jobs: queue.Queue, aggregator: Aggregator, stats: RunStats,
                      failure: list[BaseException]) -> None:
        while True:
            first = jobs.get()
            if first is _STOP:
                return
            group = [first]
            stop = False
            while sum(len(j.crops) for j in group) < self.cfg.embed.batch_size:
                try:
                    nxt = jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)
            if not failure:
                try:
                    self._embed_group(group, aggregator, stats)
                except BaseException as exc:  # noqa: BLE001 - handed to the detecting thread, which re-raises it
                    failure.append(exc)
            if stop:
                return

    def _embed_group(self, group: list[_EmbedJob], aggregator: Aggregator, stats: RunStats) -> None:
        todo = [c for job in group for c in job.crops] + [c for job in group for d in job.ends for c in d.pooled]
        t0 = time.perf_counter()
        feats, norms = self.embedder.embed([c.image for c, _ in todo])
        stats.add_time("embed", time.perf_counter() - t0)
        stats.crops_embedded += len(todo)
        aggregator.add([c for c, _ in todo], feats, norms, [s for _, s in todo])
        t1 = time.perf_counter()
        for job in group:
            for done in job.ends:
                fusion = aggregator.pop(done.source_id, done.end.track_id)
                template = fusion.template(done.end.first_seen, done.end.last_seen, done.frames)
                template.best_crop = done.best
                result = self.matcher.match(template)
                stats.tracks += 1
                stats.matches += result.decision == "match"
                stats.results.append((template, result))
                for sink in self.sinks:
                    sink.on_track(template, result)
        stats.add_time("match", time.perf_counter() - t1)
