"""The file runner: video files through the engine, one after another.

Three threads joined by bounded queues: the source decodes ahead (``source.queue_size`` frames), the calling
thread detects a batch of frames and tracks them (``SourceTracking``), and the ``EmbedWorker`` embeds the selected
crops of several frames and tracks in one batch, fuses them and matches finished tracks (``TrackMatching``). When
embedding is slower, its queue fills and detection waits; memory stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.types import Frame
from stages.detect import FaceDetector
from stages.embed import Embedder
from stages.match import Matcher

from .config import AppConfig
from .engine import EmbedWorker, RunStats, SourceTracking, TrackJob, TrackMatching, detect
from .sinks import ResultSink
from .sources import DecodeReport, FileSource

__all__ = ["FileRunner", "FileRunStats", "FrameBoxes"]

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


class FileRunner:
    """Runs video files through the engine; every finished, confirmed track goes to the sinks.
    ``progress(stats, frames)`` is called after each detected batch."""

    def __init__(
        self,
        cfg: AppConfig,
        detector: FaceDetector,
        embedder: Embedder,
        matcher: Matcher,
        sinks: Sequence[ResultSink],
        keep_boxes: bool = False,
        progress: Callable[[RunStats, int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.matching = TrackMatching(cfg, embedder, matcher, sinks)
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
        tracking = SourceTracking(self.cfg, source.source_id)
        boxes = stats.boxes.setdefault(source.source_id, []) if self.keep_boxes else None
        frames = iter(source)
        batch: list[Frame] = []
        done = False
        last_t = source.cfg.start
        while not done and not worker.failure and not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                batch.append(next(frames))
            except StopIteration:
                done = True
            stats.add_time("decode_wait", time.perf_counter() - t0)
            if batch and (done or len(batch) >= self.cfg.detect.batch_size):
                worker.put(self._process_batch(batch, tracking, stats, boxes))
                last_t = batch[-1].timestamp
                batch = []
        worker.put(TrackJob(ends=tracking.close_all()))
        stats.video_seconds += max(0.0, last_t - source.cfg.start)

    def _process_batch(
        self, batch: list[Frame], tracking: SourceTracking, stats: RunStats, boxes: list[FrameBoxes] | None
    ) -> TrackJob:
        job = TrackJob()
        plans = [tracking.plan(f) for f in batch]
        for frame, dets in zip(batch, detect(self.detector, batch, stats, plans)):
            tracked = tracking.frame(frame, dets, job, stats)
            if boxes is not None:
                keep = tracked.track_id >= 0
                boxes.append(
                    FrameBoxes(frame.index, frame.timestamp, tracked.xyxy[keep], tracked.track_id[keep])
                )
        if self.progress is not None:
            self.progress(stats, len(batch))
        return job
