"""The Ray engine's driver: one actor per camera (decode, detect, track, quality, crop selection) and one shared
embedding service (embed, fuse, match against the gallery in SQL, match log, alerts); the actors are
``pipeline.live.ray_actors``, built from the same classes as the single-process live runner and by the same builder.

``run_ray`` connects to ``address`` (an existing cluster) or starts a local Ray instance, runs until ``stop``
is set, the duration is over or every camera has ended, then stops the cameras, lets each finish its open
tracks (within ``live.restart.shutdown_timeout_s``), drains the embedding service and closes the match log. The
service uses a GPU when the node has one and the embedder is configured for it (``embed.device``). The driver
polls each camera actor's health into a ``HealthRegistry`` (for the status line and the metrics endpoint).

Restarts (``live.restart``; what makes them lose and repeat no track: ``pipeline.live.ray_supervise``):

- A camera actor that dies (killed, its process lost, or an error out of its loop) is started again after a
  backoff, as a new actor whose track ids follow the run's; the service first closes the tracks the dead one had
  sent crops for (fused from those crops, logged once). Past its restart budget it is reported ``failed``: its
  run in the match log is closed ``failed`` once the tracks it had sent are logged, and the other cameras go on.
- An embedding service that dies (or whose embedding thread failed) is started again after a backoff, continuing
  the same runs of the match log; each camera switches to it and sends it the crops of its open tracks and the
  tracks it ended that the dead service may not have logged; tracks the log holds already are not logged again.
  Past its restart budget the run fails.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import threading
import time

from core.errors import ConfigError, RunFailure
from core.secrets import redact_text
from pipeline.config import AppConfig
from pipeline.live.config import CameraConfig, LiveConfig
from pipeline.live.health import HealthRegistry, PolledHealth
from pipeline.live.ray_actors import CameraWorker, EmbedService, figures
from pipeline.live.ray_supervise import Backoff, InOrder, carried

__all__ = ["InOrder", "run_ray"]

logger = logging.getLogger(__name__)


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
        driver = _Driver(ray, cfg, live, cameras, db_url, health, duration_s)
        return driver.run(stop, registry, poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started:
            ray.shutdown()


class _Driver:
    """One run's actors: started, polled, restarted with backoff when they die, their results collected."""

    def __init__(self, ray, cfg, live: LiveConfig, cameras, db_url: str, health: dict, duration_s) -> None:
        self.ray, self.cfg, self.live, self.db_url, self.health = ray, cfg, live, db_url, health
        self.cameras = {c.name: c for c in cameras}
        self.epoch = time.monotonic()  # one clock for frame times and delivery (latencies hold on one node)
        self.deadline = None if duration_s is None else self.epoch + duration_s
        self.run_name = f"facemoe-{secrets.token_hex(4)}"  # actors are named RUN/CAMERA (`ray list actors`)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and cfg.embed.device.startswith("cuda") else 0
        self.service_cls = ray.remote(num_cpus=0, num_gpus=gpus, max_concurrency=4)(EmbedService)
        self.camera_cls = ray.remote(num_cpus=0, max_concurrency=4)(CameraWorker)
        self.service_backoff = Backoff(live.restart)
        self.backoff = {n: Backoff(live.restart) for n in self.cameras}
        self.generation, self.ping, self.earlier = 0, None, {}  # earlier: counts of dead services
        self.counts: dict = {}
        self.failed: set[str] = set()  # cameras given up: their runs are closed `failed`
        self.service = self._new_service(None)
        self.workers: dict = {}
        self.incarnation = dict.fromkeys(self.cameras, 0)
        self.base: dict = {}  # camera -> its health carried over from its dead actors
        self.runs: dict = {}  # a camera actor's run reply -> its camera
        self.due: dict[str, tuple[float, int]] = {}  # camera waiting to restart -> (when, its last track id)
        self.reasons: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        for name in self.cameras:
            self._start_camera(name, 0)
        try:
            self.run_ids = ray.get(self.service.run_ids.remote())
        except ray.exceptions.RayError:  # a service that does not start ends the run (no restart)
            for worker in self.workers.values():
                ray.kill(worker)
            raise

    def run(self, stop: threading.Event, registry: HealthRegistry, poll_s: float) -> dict:
        ray, restart = self.ray, self.live.restart
        status_s = self.live.health.status_interval_s
        next_poll, next_status = time.monotonic() + poll_s, time.monotonic() + (status_s or 0.0)
        stopping = None
        while self.runs or self.due:
            if stop.is_set() and stopping is None:
                stopping = time.monotonic()
                for name in self.runs.values():
                    self.workers[name].stop.remote()
                for name in list(self.due):  # not restarted after a stop
                    del self.due[name]
                    self._give_up(name, self.reasons[name])
            if stopping is not None and time.monotonic() > stopping + restart.shutdown_timeout_s:
                for name in list(self.runs.values()):
                    ray.kill(self.workers[name])
                    self._give_up(name, f"not finished {restart.shutdown_timeout_s:.0f} s after the stop")
                break
            done = ray.wait(list(self.runs), num_returns=1, timeout=0.2)[0] if self.runs else []
            if not self.runs:
                time.sleep(0.2)
            for ref in done:
                self._camera_done(self.runs.pop(ref), ref, stopping is None)
            for name, (at, first) in list(self.due.items()):
                if time.monotonic() >= at:
                    del self.due[name]
                    self._start_camera(name, first)
            if time.monotonic() >= next_poll:
                self._check_service()
                _poll(ray, {n: self.workers[n] for n in self.runs.values()}, self.health, self.base, poll_s)
                next_poll = time.monotonic() + poll_s
            if status_s and time.monotonic() >= next_status:
                logger.info("status: %s", registry.status_line())
                next_status = time.monotonic() + status_s
        totals = self._service_call(lambda s: s.close.remote())
        for key, value in self.earlier.items():
            totals[key] += value
        logger.info("ray run over: %d tracks, %d matches", totals["tracks"], totals["matches"])
        return {"cameras": [self.results[c] for c in self.cameras], **totals}

    def _new_service(self, continue_runs: dict[str, int] | None):
        name = f"{self.run_name}/embed" + (f".{self.generation}" if self.generation else "")
        alive = [c for n, c in self.cameras.items() if n not in self.failed]
        return self.service_cls.options(name=name).remote(
            self.cfg, self.live, alive, self.db_url, self.epoch, continue_runs
        )

    def _start_camera(self, name: str, first_track_id: int) -> None:
        inc = self.incarnation[name]
        left = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        worker = self.camera_cls.options(name=f"{self.run_name}/{name}" + (f".{inc}" if inc else "")).remote(
            self.cameras[name], self.live, self.cfg, self.epoch, self.service, inc, first_track_id
        )
        self.workers[name] = worker
        self.runs[worker.run.remote(left)] = name

    def _camera_done(self, name: str, ref, restartable: bool) -> None:
        """A camera actor's run is over: its figures, or, when it died or raised, a restart or its end."""
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            over = self.deadline is not None and time.monotonic() >= self.deadline
            self._lost(name, f"camera actor failed: {_reason(exc)}", restartable and not over)
            return
        snap = carried(self.base.get(name), result.pop("snapshot"))
        self.health[name].update(snap)
        frames = result["frames"] + (self.base[name].frames_processed if name in self.base else 0)
        self.results[name] = figures(
            snap, frames, result["seconds"], result["closed_at_loss"], snap.state, None, self._restarts(name)
        )

    def _lost(self, name: str, reason: str, restartable: bool) -> None:
        wait = self.backoff[name].next_wait() if restartable else None
        if wait is None:
            self._give_up(name, reason)
            return
        last_id = self._service_call(lambda s: s.camera_lost.remote(name, self.incarnation[name], True))
        self.ray.kill(self.workers[name])  # one that raised may still hold its stream
        snap = self.health[name].snapshot()
        self.base[name] = dataclasses.replace(
            snap,
            state="restarting",
            connected=False,
            fps_in=0.0,
            fps_processed=0.0,
            failures=snap.failures + 1,
            last_error=redact_text(reason),
        )
        self.health[name].update(self.base[name])
        self.incarnation[name] += 1
        self.due[name], self.reasons[name] = (time.monotonic() + wait, last_id), reason
        cfg = self.live.restart
        logger.warning(
            "camera %s: %s; restarting it in %.1f s (restart %d; at most %d within %.0f s)",
            name,
            reason,
            wait,
            self.backoff[name].restarts,
            cfg.max_restarts,
            cfg.window_s,
        )

    def _give_up(self, name: str, reason: str) -> None:
        restarts = self._restarts(name)
        after = f" after {restarts} restarts" if restarts else ""
        logger.error(
            "camera %s: %s%s; its run is marked failed, the other cameras go on", name, reason, after
        )
        self.health[name].failed(reason)
        self._service_call(lambda s: s.camera_lost.remote(name, self.incarnation[name], False))
        self.failed.add(name)
        snap = self.health[name].snapshot()
        self.results[name] = figures(snap, snap.frames_processed, 0.0, 0, "failed", reason, restarts)

    def _restarts(self, name: str) -> int:
        return self.backoff[name].restarts

    def _service_call(self, call):
        """``ray.get(call(service))``, on a new service when the current one is dead."""
        while True:
            try:
                return self.ray.get(call(self.service))
            except self.ray.exceptions.RayActorError as exc:
                self._restart_service(f"embedding service died: {_reason(exc)}")

    def _check_service(self) -> None:
        """Look at the answer to the last ping (the service's counts); a dead or failed service is replaced."""
        ray = self.ray
        if self.ping is None:
            self.ping = self.service.ping.remote()
            return
        if not ray.wait([self.ping], timeout=0)[0]:
            return  # busy: asked again once it answers
        ping, self.ping = self.ping, None
        try:
            self.counts = ray.get(ping)
        except ray.exceptions.RayActorError as exc:
            self._restart_service(f"embedding service died: {_reason(exc)}")
        except ray.exceptions.RayError as exc:
            ray.kill(self.service)
            self._restart_service(f"embedding service failed: {_reason(exc)}")

    def _restart_service(self, reason: str) -> None:
        """Start a new embedding service (after the backoff) that continues the runs; the cameras switch to it."""
        ray, cfg = self.ray, self.live.restart
        for key, value in self.counts.items():  # what the dead one had counted at its last ping
            self.earlier[key] = self.earlier.get(key, 0) + value
        self.counts, self.ping = {}, None
        while True:
            wait = self.service_backoff.next_wait()
            if wait is None:
                for worker in self.workers.values():
                    ray.kill(worker)
                raise RunFailure(
                    f"{reason}; given up after {self.service_backoff.restarts} restarts within {cfg.window_s:.0f} s"
                )
            logger.warning(
                "%s; restarting it in %.1f s (restart %d; at most %d within %.0f s)",
                reason,
                wait,
                self.service_backoff.restarts,
                cfg.max_restarts,
                cfg.window_s,
            )
            time.sleep(wait)
            self.generation += 1
            runs = {n: r for n, r in self.run_ids.items() if n not in self.failed}
            self.service = self._new_service(runs)
            try:
                ray.get(self.service.run_ids.remote())
                break
            except ray.exceptions.RayError as exc:
                reason = f"embedding service did not start again: {_reason(exc)}"
        for name in self.runs.values():
            self.workers[name].switch.remote(self.service)
        logger.warning(
            "embedding service restarted; %d running cameras send it their open tracks", len(self.runs)
        )


def _reason(exc: BaseException) -> str:
    """One line naming an actor's error (no traceback)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _poll(ray, workers: dict, health: dict[str, PolledHealth], base: dict, timeout_s: float) -> None:
    """Fetch each running camera's health (with its dead actors' counters); one that does not answer in time
    keeps its last snapshot."""
    refs = {workers[name].snapshot.remote(): name for name in workers}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            health[refs[ref]].update(carried(base.get(refs[ref]), ray.get(ref)))
        except ray.exceptions.RayError:
            pass  # a dead actor: its run's result says so
