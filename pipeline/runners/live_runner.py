"""The live runner: several cameras in one process, detection and embedding batched across cameras.

The calling thread takes the newest frames of every camera, detects faces in all of them in one batch and tracks
them per camera (``SourceTracking``); the ``EmbedWorker`` embeds the selected crops of all cameras together and
``TrackMatching`` fuses, matches and hands tracks to the sinks (``pipeline.runners.engine``, shared with the file runner
and the Ray engine). Sinks that watch open tracks (``ProgressSink``, the watchlist alerts) also get the running
template's match, so an alert does not wait for the track to end. When a camera's stream is lost its open tracks
are closed at once; track ids stay unique per camera across reconnects. ``run`` returns when ``stop`` is set, the
duration is over, or every camera has given up; it then finishes the open tracks and waits for the embedding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from core.types import Frame
from pipeline.config import AppConfig
from pipeline.live.cameras import LiveCameras
from pipeline.live.health import HealthRegistry
from pipeline.runners.engine import EmbedWorker, TrackMatching
from pipeline.runners.tracking import EndedTrack, RunStats, SourceTracking, TrackJob, detect_and_track
from pipeline.sinks.outputs import ResultSink
from stages.cores import budget_of, detecting
from stages.detect import FaceDetector
from stages.embed import Embedder
from stages.match import Matcher

__all__ = ["LiveRunner"]

logger = logging.getLogger(__name__)


class LiveRunner:
    """Runs the stages over live cameras until stopped; every finished, confirmed track goes to the sinks."""

    def __init__(
        self,
        cfg: AppConfig,
        detector: FaceDetector,
        embedder: Embedder,
        matcher: Matcher,
        sinks: Sequence[ResultSink],
        cameras: LiveCameras,
        registry: HealthRegistry,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.cameras = cameras
        self.registry = registry
        self.matching = TrackMatching(cfg, embedder, matcher, sinks, cameras.now)
        self.cores = budget_of(embedder)  # detection holds its share of the cores while it processes frames
        self.state = {
            s.name: SourceTracking(cfg, s.name, self.matching.watching, zones=s.zones)
            for s in cameras.sources
        }

    def run(
        self, stop: threading.Event, duration_s: float | None = None, status_interval_s: float = 0.0
    ) -> RunStats:
        stats = RunStats()
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
                job = TrackJob(ends=self._close_lost_streams(stats))
                frames = self.cameras.poll()
                if frames:
                    with detecting(self.cores):
                        self._process(frames, stats, job)
                worker.put(job)  # blocks while embedding is behind; the cameras drop frames meanwhile
                if status_interval_s and time.monotonic() >= next_status:
                    logger.info("status: %s", self.registry.status_line())
                    next_status = time.monotonic() + status_interval_s
        finally:
            logger.info("live run ends (%s): finishing open tracks", "failure" if worker.failure else reason)
            self.cameras.stop()
            worker.put(TrackJob(ends=[e for cam in self.state.values() for e in cam.close_all()]))
            worker.close()
        return stats

    def _close_lost_streams(self, stats: RunStats) -> list[EndedTrack]:
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

    def _tracking(self, frame: Frame) -> SourceTracking:
        return self.state[frame.source_id]

    def _process(self, frames: list[Frame], stats: RunStats, job: TrackJob) -> None:
        size = self.cfg.detect.batch_size
        for start in range(0, len(frames), size):
            batch = frames[start : start + size]
            for frame, _ in detect_and_track(self.detector, batch, self._tracking, job, stats):
                self.registry.cameras[frame.source_id].frame_processed()
