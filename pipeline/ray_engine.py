"""The Ray engine: one actor per camera (decode, detect, track, quality, crop selection) and one shared
embedding service (embed, fuse, match against the gallery in SQL, match log, alerts), built from the same
classes as the single-process live runner (``pipeline.engine``), and built by the same builder.

``run_ray`` connects to ``address`` (an existing cluster) or starts a local Ray instance, runs until ``stop``
is set, the duration is over or every camera has ended, then stops the cameras, lets each finish its open
tracks, drains the embedding service and closes the match log. The service uses a GPU when the node has one
and the embedder is configured for it (``embed.device``). The driver polls each camera actor's health into a
``HealthRegistry`` (for the status line and the metrics endpoint). A camera actor that dies or fails is
reported ``failed``: its run in the match log is closed ``failed`` once the tracks it had sent are logged, and
the other cameras go on.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable

from core.errors import ConfigError

from .alerts import watchlist_alerts
from .build import build
from .config import AppConfig
from .engine import EmbedWorker, RunStats, SourceTracking, TrackJob, TrackMatching, detect_and_track
from .health import CameraHealth, HealthRegistry, PolledHealth
from .live import LiveSource
from .live_config import CameraConfig, LiveConfig
from .sql_gallery import LoggedSource

__all__ = ["InOrder", "run_ray"]

logger = logging.getLogger(__name__)


class InOrder:
    """Puts each camera's jobs in the order the camera numbered them (0, 1, ...), whatever order they arrive in:
    a threaded Ray actor may run one caller's calls out of order, and a track's end must follow its crops."""

    def __init__(self, put: Callable[[TrackJob], None]) -> None:
        self.put = put
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._next: dict[str, int] = {}
        self._held: dict[str, dict[int, TrackJob]] = {}

    def submit(self, camera: str, seq: int, job: TrackJob) -> None:
        with self._lock:
            lock = self._locks.setdefault(camera, threading.Lock())
        with lock:
            held = self._held.setdefault(camera, {})
            nxt = self._next.setdefault(camera, 0)
            if seq < nxt or seq in held:
                raise ValueError(f"camera {camera}: job {seq} expected once, got it again")
            held[seq] = job
            while nxt in held:  # put may block (back-pressure): later jobs of this camera wait here
                self.put(held.pop(nxt))
                nxt += 1
            self._next[camera] = nxt


class CameraWorker:
    """One camera: its decode thread, a detector and its tracking; jobs go to the embedding service."""

    def __init__(self, camera: CameraConfig, live: LiveConfig, cfg: AppConfig, epoch: float) -> None:
        self.cfg = cfg
        self.health = CameraHealth(camera.name, live.health.fps_window_s)
        self.source = LiveSource(camera, live, self.health, epoch=epoch)
        self.system = build(cfg, embedder=False, gallery=False)
        self.tracking = SourceTracking(cfg, camera.name)
        self.stats = RunStats()
        self._seq = itertools.count()  # jobs are numbered: the service queues them in this order
        self._stop = threading.Event()

    def run(self, service, duration_s: float | None) -> dict:
        import ray

        deadline = None if duration_s is None else time.monotonic() + duration_s
        self.source.start()
        frames_done = closed = 0
        first = None
        pending = []
        while self.source.alive and not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
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
                pending.append(service.submit.remote(self.tracking.source_id, next(self._seq), job))
                if len(pending) > 4:  # back-pressure: at most a few jobs in flight per camera
                    ray.get(pending.pop(0))
        seconds = 0.0 if first is None else time.monotonic() - first
        self.source.stop()
        self.source.join(30)
        pending.append(
            service.submit.remote(
                self.tracking.source_id, next(self._seq), TrackJob(ends=self.tracking.close_all())
            )
        )
        ray.get(pending)
        snap = self.health.snapshot()
        return {**_figures(snap, frames_done, seconds, closed, snap.state, None), "snapshot": snap}

    def snapshot(self):
        """The camera's health now (polled by the driver)."""
        return self.health.snapshot()

    def stop(self) -> None:
        self._stop.set()


class EmbedService:
    """The shared embedding, matching and logging side: crops of every camera batched together."""

    def __init__(
        self, cfg: AppConfig, live: LiveConfig, cameras: list[CameraConfig], db_url: str, epoch: float
    ) -> None:
        self.system = build(cfg, db_url=db_url, detector=False)
        self.log = self.system.match_log(
            [LoggedSource(c.name, "camera", c.url) for c in cameras], batch_size=1
        )
        self.alerts = watchlist_alerts(live.alerts, self.system.gallery)
        self.matching = TrackMatching(
            cfg,
            self.system.embedder,
            self.system.matcher(),
            [self.alerts, self.log],
            lambda: time.monotonic() - epoch,
        )
        self.stats = RunStats()
        self.worker = EmbedWorker(self.matching, cfg.embed.batch_size, cfg.runner.queue_size, self.stats)
        self.order = InOrder(self.worker.put)

    def submit(self, camera: str, seq: int, job: TrackJob) -> None:
        self.order.submit(camera, seq, job)

    def camera_failed(self, name: str) -> None:
        """A camera's actor died: once the jobs it sent are handled, close its run ``failed`` and forget its open
        tracks (they will never end); later tracks of it are not logged."""

        def close() -> None:
            dropped = self.matching.drop_source(name)
            self.log.close_source(name, "failed")
            logger.warning(
                "camera %s: run closed as failed (%d open tracks lost with its actor)", name, dropped
            )

        self.worker.put(TrackJob(after=close))

    def close(self, status: str = "finished") -> dict:
        try:
            self.worker.close()
        finally:
            self.alerts.close()
            self.log.close(status)
            self.system.close()
        return {
            "tracks": self.stats.tracks,
            "matches": self.stats.matches,
            "crops_embedded": self.stats.crops_embedded,
            "latencies_s": list(self.stats.latencies_s),
        }


def _catch_signals(stop: threading.Event) -> dict:
    """SIGINT/SIGTERM set ``stop`` (``ray.init`` installs handlers of its own that abort the driver); returns the
    handlers to put back. Only the main thread can do this; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}


def run_ray(
    cfg: AppConfig,
    live: LiveConfig,
    cameras: list[CameraConfig],
    db_url: str,
    stop: threading.Event,
    duration_s: float | None = None,
    address: str | None = None,
    registry: HealthRegistry | None = None,
    poll_s: float = 1.0,
) -> dict:
    """Run the cameras on Ray until stopped; returns per-camera figures and the service's totals. The cameras'
    health is polled every ``poll_s`` seconds into ``registry`` (a new one unless given)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs the ray package: pip install -c constraints.txt 'ray[default]'"
        ) from None
    started = not ray.is_initialized()
    if started:  # the workers import the installed package, as the driver does
        # camera passwords named by password_env travel to the workers as environment, never in the config
        env = {n: os.environ[n] for n in {c.password_env for c in cameras} - {None} if n in os.environ}
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            runtime_env={"env_vars": env} if env else None,
        )
    previous = _catch_signals(stop)
    registry = registry if registry is not None else HealthRegistry(live.health.fps_window_s)
    health = {c.name: registry.add_polled(c.name) for c in cameras}
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and cfg.embed.device.startswith("cuda") else 0
        epoch = time.monotonic()  # one clock for frame times and delivery (latencies hold on one node)
        service = ray.remote(num_cpus=0, num_gpus=gpus, max_concurrency=4)(EmbedService).remote(
            cfg, live, cameras, db_url, epoch
        )
        actor = ray.remote(num_cpus=0, max_concurrency=2)(CameraWorker)
        run_name = f"facemoe-{secrets.token_hex(4)}"  # actors are named RUN/CAMERA (`ray list actors`)
        workers = {
            c.name: actor.options(name=f"{run_name}/{c.name}").remote(c, live, cfg, epoch) for c in cameras
        }
        runs = {workers[name].run.remote(service, duration_s): name for name in workers}
        results: dict[str, dict] = {}
        status_s = live.health.status_interval_s
        next_poll, next_status = time.monotonic() + poll_s, time.monotonic() + (status_s or 0.0)
        while runs and not stop.is_set():
            done, _ = ray.wait(list(runs), num_returns=1, timeout=0.2)
            for ref in done:
                name = runs.pop(ref)
                results[name] = _camera_result(ray, ref, name, health[name], service)
            if time.monotonic() >= next_poll:
                _poll(ray, {n: workers[n] for n in runs.values()}, health, poll_s)
                next_poll = time.monotonic() + poll_s
            if status_s and time.monotonic() >= next_status:
                logger.info("status: %s", registry.status_line())
                next_status = time.monotonic() + status_s
        for name in runs.values():
            workers[name].stop.remote()
        for ref, name in runs.items():
            results[name] = _camera_result(ray, ref, name, health[name], service)
        totals = ray.get(service.close.remote())
        logger.info("ray run over: %d tracks, %d matches", totals["tracks"], totals["matches"])
        return {"cameras": [results[c.name] for c in cameras], **totals}
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started:
            ray.shutdown()


def _poll(ray, workers: dict, health: dict[str, PolledHealth], timeout_s: float) -> None:
    """Fetch each running camera's health; a camera that does not answer in time keeps its last snapshot."""
    refs = {workers[name].snapshot.remote(): name for name in workers}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            health[refs[ref]].update(ray.get(ref))
        except ray.exceptions.RayError:
            pass  # a dead actor: its run's result says so


def _camera_result(ray, ref, name: str, health: PolledHealth, service) -> dict:
    """A camera actor's figures, or, when it died or raised, its last polled figures marked ``failed`` (its run in
    the match log is then closed ``failed`` by the service)."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as exc:
        reason = f"camera actor failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        logger.error("camera %s: %s; its run is marked failed, the other cameras go on", name, reason)
        health.failed(reason)
        ray.get(service.camera_failed.remote(name))
        snap = health.snapshot()
        return _figures(snap, snap.frames_processed, 0.0, 0, "failed", reason)
    health.update(result.pop("snapshot"))
    return result


def _figures(snap, frames: int, seconds: float, closed: int, state: str, error: str | None) -> dict:
    """One camera's figures of a run, from its health snapshot and what the actor counted."""
    return {
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
