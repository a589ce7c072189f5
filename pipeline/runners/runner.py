"""The file runner: video files through the engine, one after another.

Three threads joined by bounded queues: the source decodes ahead (``source.queue_size`` frames), the calling
thread detects a batch of frames and tracks them (``SourceTracking``), and the ``EmbedWorker`` embeds the selected
crops of several frames and tracks in one batch, fuses them and matches finished tracks (``TrackMatching``). When
embedding is slower, its queue fills and detection waits; memory stays bounded.

Checkpoints: after the embedding side has handled a detected batch (so every track that ended up to its last frame
has reached the sinks), ``checkpoint(source_id, frames, last_timestamp, resume_at)`` is called, ``resume_at`` being
the first frame time of the oldest track that may still be open. A run resumed from such a checkpoint
(:class:`Resume`) drops the tracks that were logged already: those that end at a frame up to the checkpoint's
``last_timestamp``, and those whose (start, end) times are in its ``logged`` list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.types import Frame, MatchResult, TrackTemplate
from pipeline.config import AppConfig
from pipeline.runners.engine import EmbedWorker, TrackMatching
from pipeline.runners.sources import DecodeReport, FileSource
from pipeline.runners.tracking import RunStats, SourceTracking, TrackJob, detect_and_track
from pipeline.sinks.outputs import ResultSink
from stages.cores import budget_of, detecting
from stages.detect import FaceDetector
from stages.embed import Embedder
from stages.match import Matcher

__all__ = ["FileRunner", "FileRunStats", "FrameBoxes", "Resume"]

logger = logging.getLogger(__name__)


@dataclass
class FrameBoxes:
    """Tracked boxes of one processed frame (kept only when asked for: annotated videos, evaluation)."""

    index: int
    timestamp: float
    xyxy: np.ndarray
    track_id: np.ndarray


@dataclass
class FileRunStats(RunStats):
    """A file run's figures, plus per source: its decode report and (when kept) its tracked boxes."""

    video_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.decode: dict[str, DecodeReport] = {}
        self.boxes: dict[str, list[FrameBoxes]] = {}


@dataclass
class Resume:
    """What an interrupted run of a source already logged: every track that ended at a frame up to
    ``committed_at`` (stream seconds; None: none by that rule), and the tracks with these ``logged``
    (start, end) times (each drops one track)."""

    committed_at: float | None
    logged: list[tuple[float, float]]


class _ResumeFilter:
    """Passes a resumed run's tracks to the sinks, except the ones logged already (see :class:`Resume`)."""

    def __init__(self, sinks: Sequence[ResultSink], resume: dict[str, Resume]) -> None:
        self.sinks, self.resume = list(sinks), resume
        self.skip: set[tuple[str, int]] = set()  # (source, track id) that ended by the checkpoint
        self.dropped = 0

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        key = (template.source_id, template.track_id)
        spans = self.resume[template.source_id].logged if template.source_id in self.resume else []
        same = [
            i
            for i, (a, b) in enumerate(spans)
            if _near(a, template.first_timestamp, b, template.last_timestamp)
        ]
        if key not in self.skip and not same:
            for sink in self.sinks:
                sink.on_track(template, result)
            return
        self.skip.discard(key)
        if same:
            del spans[same[0]]
        self.dropped += 1
        logger.debug("resume: %s track %d was logged by the interrupted run", *key)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _near(a0: float, a1: float, b0: float, b1: float) -> bool:
    return abs(a0 - a1) < 1e-4 and abs(b0 - b1) < 1e-4


class FileRunner:
    """Runs video files through the engine; every finished, confirmed track goes to the sinks.
    ``progress(stats, frames)`` is called after each detected batch; ``checkpoint`` once the embedding side has
    handled it (module docstring); ``resume``: per source id, what an interrupted run logged already."""

    def __init__(
        self,
        cfg: AppConfig,
        detector: FaceDetector,
        embedder: Embedder,
        matcher: Matcher,
        sinks: Sequence[ResultSink],
        keep_boxes: bool = False,
        progress: Callable[[RunStats, int], None] | None = None,
        checkpoint: Callable[[str, int, float, float], None] | None = None,
        resume: dict[str, Resume] | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.filter = _ResumeFilter(sinks, resume) if resume else None
        self.matching = TrackMatching(cfg, embedder, matcher, [self.filter] if self.filter else sinks)
        self.cores = budget_of(embedder)  # detection holds its share of the cores while it processes a batch
        self.checkpoint = checkpoint
        self.keep_boxes = keep_boxes
        self.progress = progress
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running ``run`` (from another thread) to stop reading; the tracks open so far still finish."""
        self._stop.set()

    def run(self, sources: Iterable[FileSource]) -> FileRunStats:
        stats = FileRunStats()
        start = time.perf_counter()
        for source in sources:
            worker = EmbedWorker(self.matching, self.cfg.embed.batch_size, self.cfg.runner.queue_size, stats)
            try:
                self._detect_loop(source, stats, worker)
            finally:
                worker.close()  # finishes the queued tracks; re-raises an embedding failure
                stats.decode[source.source_id] = source.report
        stats.seconds["total"] = time.perf_counter() - start
        return stats

    def _detect_loop(self, source: FileSource, stats: FileRunStats, worker: EmbedWorker) -> None:
        tracking = SourceTracking(self.cfg, source.source_id, self.matching.watching)
        boxes = stats.boxes.setdefault(source.source_id, []) if self.keep_boxes else None
        frames = iter(source)
        batch: list[Frame] = []
        done = False
        last_t = source.cfg.start
        seen = _OpenTracks(self.cfg.track.max_lost_s)
        while not done and not worker.failure and not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                batch.append(next(frames))
            except StopIteration:
                done = True
            stats.add_time("decode_wait", time.perf_counter() - t0)
            if batch and (done or len(batch) >= self.cfg.detect.batch_size):
                with detecting(self.cores):
                    job = self._process_batch(batch, tracking, stats, boxes, seen)
                last_t = batch[-1].timestamp
                if self.checkpoint is not None:
                    point = (source.source_id, seen.frames, last_t, seen.oldest(last_t))
                    job.after = lambda point=point: self.checkpoint(*point)
                worker.put(job)
                batch = []
        worker.put(TrackJob(ends=tracking.close_all()))
        stats.video_seconds += max(0.0, last_t - source.cfg.start)

    def _process_batch(
        self,
        batch: list[Frame],
        tracking: SourceTracking,
        stats: RunStats,
        boxes: list[FrameBoxes] | None,
        seen: _OpenTracks,
    ) -> TrackJob:
        job = TrackJob()
        resume = self.filter.resume.get(tracking.source_id) if self.filter else None
        ended = 0
        for frame, tracked in detect_and_track(self.detector, batch, lambda _: tracking, job, stats):
            new_ends, ended = job.ends[ended:], len(job.ends)
            seen.frame(frame.timestamp, tracked.track_id, [e.end.track_id for e in new_ends])
            if (
                resume is not None
                and resume.committed_at is not None
                and frame.timestamp <= resume.committed_at
            ):
                self.filter.skip.update((tracking.source_id, e.end.track_id) for e in new_ends)
            if boxes is not None:
                keep = tracked.track_id >= 0
                boxes.append(
                    FrameBoxes(frame.index, frame.timestamp, tracked.xyxy[keep], tracked.track_id[keep])
                )
        if self.progress is not None:
            self.progress(stats, len(batch))
        return job


class _OpenTracks:
    """First and last frame times of the tracks a source may still have open (the tracker's ids seen in its
    output, until they end or are unseen for longer than ``max_lost_s``): where a resumed run must start to
    see every open track whole. Erring on the early side is safe (:class:`Resume` drops what was logged)."""

    def __init__(self, max_lost_s: float) -> None:
        self.max_lost_s = max_lost_s
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.frames = 0

    def frame(self, timestamp: float, track_ids: np.ndarray, ended: list[int]) -> None:
        self.frames += 1
        for tid in track_ids[track_ids >= 0].tolist():
            self.first.setdefault(tid, timestamp)
            self.last[tid] = timestamp
        for tid in ended:
            self.first.pop(tid, None)
            self.last.pop(tid, None)

    def oldest(self, now: float) -> float:
        """The first frame time of the oldest track that may be open at ``now`` (``now`` when none)."""
        for tid in [t for t, last in self.last.items() if now - last > self.max_lost_s + 1e-6]:
            del self.first[tid], self.last[tid]
        return min(self.first.values(), default=now)
