"""The Ray engine's actors: ``CameraWorker``, one per camera (decode, detect, track, quality, crop selection), and
``EmbedService``, shared (embed, fuse, match against the gallery in SQL, match log, alerts), built from the same
classes as the single-process live runner (``pipeline.runners.engine``) and by the same builder. The driver that
starts and restarts them is ``pipeline.live.ray_engine``; what makes a restart lose and repeat no track is
``pipeline.live.ray_supervise``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

from pipeline.build import build
from pipeline.config import AppConfig
from pipeline.live.cameras import LiveSource
from pipeline.live.config import CameraConfig, LiveConfig
from pipeline.live.health import CameraHealth
from pipeline.live.ray_supervise import InOrder, Retained, continued_log, offset_job
from pipeline.runners.engine import EmbedWorker, TrackMatching
from pipeline.runners.tracking import RunStats, SourceTracking, TrackJob, detect_and_track
from pipeline.sinks.alerts import watchlist_alerts
from pipeline.sinks.sql_gallery import LoggedSource

__all__ = ["CameraWorker", "EmbedService", "figures"]

logger = logging.getLogger(__name__)


class CameraWorker:
    """One camera: its decode thread, a detector and its tracking; jobs go to the embedding service. A restarted
    camera is a new actor (``incarnation`` > 0) whose track ids start after ``first_track_id``. When the service
    dies, the camera waits for the driver to ``switch`` it to a new one and sends it what it retained."""

    def __init__(
        self,
        camera: CameraConfig,
        live: LiveConfig,
        cfg: AppConfig,
        epoch: float,
        service,
        incarnation: int = 0,
        first_track_id: int = 0,
    ) -> None:
        self.cfg = cfg
        self.name, self.incarnation, self.first_track_id = camera.name, incarnation, first_track_id
        self.wait_s = live.restart.service_wait_s
        self.health = CameraHealth(camera.name, live.health.fps_window_s)
        self.source = LiveSource(camera, live, self.health, epoch=epoch)
        self.system = build(cfg, embedder=False, gallery=False)
        # early: the service holds embedded crops of every open track, so an actor that dies loses none of them
        self.tracking = SourceTracking(cfg, camera.name, early=True, zones=self.source.zones)
        self.stats = RunStats()
        self.retained = Retained()
        self._changed = threading.Condition()
        self._service, self._gen = service, 0  # the newest service the driver gave (switch), its generation
        self._sent_to, self._sent_gen = service, 0  # the service the jobs now go to
        self._seq = itertools.count()  # jobs are numbered: the service queues them in this order
        self._pending: list[tuple[int, object]] = []  # (service generation, reply) of jobs in flight
        self._stop = threading.Event()

    def run(self, duration_s: float | None) -> dict:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        self.source.start()
        frames_done = closed = 0
        first = None
        while self.source.alive and not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            self._sync()
            job = TrackJob()
            if self.source.generation != self.tracking.generation:
                self.tracking.generation = self.source.generation
                job.ends = self.tracking.close_all()
                closed += len(job.ends)
            frames = []
            while len(frames) < self.cfg.detect.batch_size and (f := self.source.read()) is not None:
                frames.append(f)
            if frames:
                tracked = detect_and_track(
                    self.system.detector, frames, lambda _: self.tracking, job, self.stats
                )
                for _ in tracked:
                    self.health.frame_processed()
                frames_done += len(frames)
                first = time.monotonic() if first is None else first
            else:
                time.sleep(0.01)
            if job.crops or job.ends:
                self._send(offset_job(job, self.first_track_id))
        seconds = 0.0 if first is None else time.monotonic() - first
        self.source.stop()
        self.source.join(30)
        self._send(offset_job(TrackJob(ends=self.tracking.close_all()), self.first_track_id))
        self._drain()
        snap = self.health.snapshot()
        return {**figures(snap, frames_done, seconds, closed, snap.state, None), "snapshot": snap}

    def _send(self, job: TrackJob) -> None:
        """Send a job (track ids already offset) to the current service; at most a few wait for their reply."""
        self._sync()
        seq = next(self._seq)
        self.retained.sent(seq, job)
        self._pending.append(
            (self._sent_gen, self._sent_to.submit.remote(self.name, self.incarnation, seq, job))
        )
        while len(self._pending) > 4:  # back-pressure: at most a few jobs in flight per camera
            self._settle(*self._pending.pop(0))

    def _settle(self, gen: int, reply) -> None:
        """Wait for a job's reply (the last job the service handled: what is retained for it can go); when the
        service is gone, wait for its successor (the retained jobs go to it at the next ``_sync``)."""
        import ray

        try:
            handled = ray.get(reply)
        except ray.exceptions.RayActorError:
            self._await_service(gen)
            return
        if gen == self._sent_gen:
            self.retained.handled(handled)

    def _await_service(self, gen: int) -> None:
        with self._changed:
            if self._gen > gen:
                return
            logger.info("camera %s: embedding service gone, waiting for its successor", self.name)
            if not self._changed.wait_for(lambda: self._gen > gen, timeout=self.wait_s):
                raise RuntimeError(f"embedding service gone and not replaced within {self.wait_s:.0f} s")

    def _sync(self) -> None:
        """After a ``switch``: jobs go to the new service, numbered from 0, the first one all that is retained."""
        with self._changed:
            service, gen = self._service, self._gen
        if gen == self._sent_gen:
            return
        self._sent_to, self._sent_gen, self._seq = service, gen, itertools.count()
        self._pending.clear()  # replies of the dead service: what they were for is retained
        crops, tracks, ended = self.retained.counts()
        logger.info(
            "camera %s: sending the new embedding service %d crops of %d open tracks and %d ended tracks",
            self.name,
            crops,
            tracks,
            ended,
        )
        job = self.retained.replay()
        if job.crops or job.ends:
            self._send(job)

    def _drain(self) -> None:
        """Wait until the service has handled every track this camera ended (through service restarts)."""
        import ray

        deadline = time.monotonic() + self.wait_s
        while True:
            self._sync()
            while self._pending:
                self._settle(*self._pending.pop(0))
            if self._sent_gen != self._gen:
                continue  # switched meanwhile: send the retained jobs to the new service
            if not self.retained.ended:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"tracks not handled by the embedding service within {self.wait_s:.0f} s")
            try:
                self.retained.handled(ray.get(self._sent_to.handled.remote(self.name, self.incarnation)))
            except ray.exceptions.RayActorError:
                self._await_service(self._sent_gen)
            time.sleep(0.05)

    def switch(self, service) -> None:
        """The driver restarted the embedding service: later jobs go to ``service``."""
        with self._changed:
            self._service, self._gen = service, self._gen + 1
            self._changed.notify_all()

    def snapshot(self):
        """The camera's health now (polled by the driver)."""
        return self.health.snapshot()

    def stop(self) -> None:
        self._stop.set()


class EmbedService:
    """The shared embedding, matching and logging side: crops of every camera batched together. A restarted
    service is given the runs of the dead one (``continue_runs``) and goes on writing them; tracks the cameras send
    again that are in those runs already are not delivered twice."""

    def __init__(
        self,
        cfg: AppConfig,
        live: LiveConfig,
        cameras: list[CameraConfig],
        db_url: str,
        epoch: float,
        continue_runs: dict[str, int] | None = None,
    ) -> None:
        self.system = build(cfg, db_url=db_url, detector=False)
        sources = [LoggedSource(c.name, "camera", c.url, time_origin="camera") for c in cameras]
        index = self.system.index()  # one threshold: the one decided at is the one stored on each run
        if continue_runs:
            self.log = continued_log(self.system, sources, continue_runs, index.in_force)
        else:
            self.log = self.system.match_log(sources, batch_size=1, threshold=index.in_force)
        self.alerts = watchlist_alerts(live.alerts, self.system.gallery)
        self.alerts.run_ids, self.alerts.media = self.log.run_ids, self.log.media_paths
        self.matching = TrackMatching(
            cfg,
            self.system.embedder,
            self.system.matcher(index),
            [self.alerts, self.log],
            lambda: time.monotonic() - epoch,
            logged=lambda source, track: (
                source in self.log.writers and self.log.writers[source].logged(track)
            ),
        )
        self.stats = RunStats()
        self.worker = EmbedWorker(self.matching, cfg.embed.batch_size, cfg.runner.queue_size, self.stats)
        self.order = InOrder(self.worker.put)
        self._lock = threading.Lock()
        self._handled: dict[str, int] = {}  # camera incarnation -> its last job handled
        self._top = {
            name: w.top_track_id for name, w in self.log.writers.items()
        }  # highest track id per camera

    def submit(self, camera: str, incarnation: int, seq: int, job: TrackJob) -> int:
        """Queue a camera's job in its order; returns the camera's last job handled (-1: none yet)."""
        key = f"{camera}#{incarnation}"
        ids = [c.track_id for c, _ in job.crops] + [e.end.track_id for e in job.ends]
        with self._lock:
            self._top[camera] = max([self._top.get(camera, 0), *ids])
        job.after = lambda: self._handled.__setitem__(key, seq)
        if not self.order.submit(key, seq, job):
            logger.debug("camera %s: job %d of a retired actor dropped", key, seq)
        return self._handled.get(key, -1)

    def handled(self, camera: str, incarnation: int) -> int:
        return self._handled.get(f"{camera}#{incarnation}", -1)

    def run_ids(self) -> dict[str, int]:
        return self.log.run_ids

    def ping(self) -> dict:
        """The service's counts so far; raises when the embedding thread has failed (the driver then replaces this
        service)."""
        if self.worker.failure:
            raise RuntimeError(f"embedding failed: {self.worker.failure[0]}")
        return self._counts()

    def _counts(self) -> dict:
        stats = self.stats
        return {
            "tracks": stats.tracks,
            "matches": stats.matches,
            "crops_embedded": stats.crops_embedded,
            "not_logged_twice": self.matching.skipped,
        }

    def camera_lost(self, name: str, incarnation: int, restart: bool) -> int:
        """A camera's actor died: the jobs it sent are handled (a missing one skipped), then its open tracks are
        closed from the crops here, each logged once; without ``restart`` its run is closed ``failed``. Returns the
        highest track id of the camera so far: a successor's ids start after it."""
        held = self.order.retire(f"{name}#{incarnation}")
        for job in held:
            self.worker.put(job)
        with self._lock:
            up_to = self._top.get(name, 0)

        def close() -> None:
            closed = self.matching.close_source(name, up_to, self.stats)
            if not restart:
                self.log.close_source(name, "failed")
            logger.info(
                "camera %s: %d open tracks closed at its actor's loss%s",
                name,
                closed,
                "" if restart else "; its run closed as failed",
            )

        self.worker.put(TrackJob(after=close))
        return up_to

    def close(self, status: str = "finished") -> dict:
        try:
            self.worker.close()
        finally:
            self.alerts.close()
            self.log.close(status)
            self.system.close()
        return {**self._counts(), "latencies_s": list(self.stats.latencies_s)}


def figures(
    snap, frames: int, seconds: float, closed: int, state: str, error: str | None, restarts: int = 0
) -> dict:
    """One camera's figures of a run, from its health snapshot and what the actor(s) counted."""
    return {
        "restarts": restarts,
        "camera": snap.name,
        "frames": frames,
        "seconds": seconds,
        "closed_at_loss": closed,
        "frames_in": snap.frames_in,
        "dropped": snap.dropped,
        "reconnects": snap.reconnects,
        "failures": snap.failures,
        "state": state,
        "error": error,
    }
