"""What lets the Ray engine (``pipeline.live.ray_engine``) restart its actors without losing or repeating a track.

- ``Backoff``: the waits before restarting one actor (exponential, capped, a bounded number within a window).
- ``InOrder``: the embedding service queues each camera incarnation's jobs in the order it numbered them; a dead
  incarnation is retired (what it had sent is queued, gap or not; what it sends late is dropped).
- ``Retained``: what a camera has sent and may have to send again to a restarted embedding service: the crops of
  its open tracks and the tracks ended in jobs the service has not handled yet (bounded by those).
- ``offset_job``: a restarted camera's track ids start after every id of the run so far (no clash in the log).
- ``continued_log``: the match log of a restarted service, continuing the runs of the dead one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from core.types import FaceCrop
from gallery.matchlog import MatchLogWriter
from gallery.thresholds import InForce
from gallery.thumbnails import ThumbnailStore
from pipeline.live.config import RestartConfig
from pipeline.live.health import CameraSnapshot
from pipeline.runners.tracking import EndedTrack, TrackJob
from pipeline.sinks.sql_gallery import LoggedSource, MatchLogSink

__all__ = ["Backoff", "InOrder", "Retained", "carried", "continued_log", "offset_job"]

logger = logging.getLogger(__name__)


class Backoff:
    """Restart waits of one actor: ``initial_s`` times ``multiplier`` per restart within ``window_s``, capped at
    ``max_s``; None (give up) once ``max_restarts`` restarts happened within the window."""

    def __init__(self, cfg: RestartConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.times: deque[float] = deque()
        self.restarts = 0

    def next_wait(self) -> float | None:
        """The wait before the next restart (counted as done), or None when the restart budget is spent."""
        now, cfg = self.clock(), self.cfg
        while self.times and self.times[0] <= now - cfg.window_s:
            self.times.popleft()
        if len(self.times) >= cfg.max_restarts:
            return None
        wait = min(cfg.max_s, cfg.initial_s * cfg.multiplier ** len(self.times))
        self.times.append(now)
        self.restarts += 1
        return wait


class InOrder:
    """Puts each camera's jobs in the order the camera numbered them (0, 1, ...), whatever order they arrive in:
    a threaded Ray actor may run one caller's calls out of order, and a track's end must follow its crops.
    ``camera`` is a key: one per camera incarnation (a restarted camera numbers its jobs from 0 again)."""

    def __init__(self, put: Callable[[TrackJob], None]) -> None:
        self.put = put
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._next: dict[str, int] = {}
        self._held: dict[str, dict[int, TrackJob]] = {}
        self._retired: set[str] = set()

    def _camera_lock(self, camera: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(camera, threading.Lock())

    def submit(self, camera: str, seq: int, job: TrackJob) -> bool:
        """Queue ``job`` in its place; False (dropped) when ``camera`` was retired."""
        with self._camera_lock(camera):
            if camera in self._retired:
                return False
            held = self._held.setdefault(camera, {})
            nxt = self._next.setdefault(camera, 0)
            if seq < nxt or seq in held:
                raise ValueError(f"camera {camera}: job {seq} expected once, got it again")
            held[seq] = job
            while nxt in held:  # put may block (back-pressure): later jobs of this camera wait here
                self.put(held.pop(nxt))
                nxt += 1
            self._next[camera] = nxt
        return True

    def retire(self, camera: str) -> list[TrackJob]:
        """The camera is gone: returns the jobs still held (waiting for a job that will never come), in order;
        later submits of it are dropped."""
        with self._camera_lock(camera):
            self._retired.add(camera)
            self._next.pop(camera, None)
            held = self._held.pop(camera, {})
        return [held[s] for s in sorted(held)]


class Retained:
    """A camera's copy of what it sent the embedding service that a new service would need: the crops of every
    open track, and each ended track (with the crops sent for it before) until the job that ended it is handled."""

    def __init__(self) -> None:
        self.open: dict[int, list[tuple[FaceCrop, float]]] = {}
        self.ended: dict[int, list[tuple[EndedTrack, list[tuple[FaceCrop, float]]]]] = {}
        self.walls: dict[
            str, float | None
        ] = {}  # the latest wall-clock offsets sent (they date replayed tracks)

    def sent(self, seq: int, job: TrackJob) -> None:
        """Job ``seq`` was sent (its crops first, then its ends, as the service handles them)."""
        self.walls.update(job.walls)
        for crop, score in job.crops:
            self.open.setdefault(crop.track_id, []).append((crop, score))
        if job.ends:
            self.ended[seq] = [(e, self.open.pop(e.end.track_id, [])) for e in job.ends]

    def handled(self, seq: int) -> None:
        """Every job up to ``seq`` is handled (its ended tracks are in the match log)."""
        for s in [s for s in self.ended if s <= seq]:
            del self.ended[s]

    def counts(self) -> tuple[int, int, int]:
        """(crops of open tracks, open tracks, ended tracks not known handled)."""
        return sum(map(len, self.open.values())), len(self.open), sum(map(len, self.ended.values()))

    def replay(self) -> TrackJob:
        """Everything retained as one job for a new service (which numbers from 0 again); the caller sends it and
        records it with :meth:`sent`."""
        ends = [pair for s in sorted(self.ended) for pair in self.ended[s]]
        crops = [c for _, sent in ends for c in sent] + [c for sent in self.open.values() for c in sent]
        self.open, self.ended = {}, {}
        return TrackJob(crops=crops, ends=[e for e, _ in ends], walls=dict(self.walls))


def offset_job(job: TrackJob, offset: int) -> TrackJob:
    """``job`` with every track id moved up by ``offset`` (copies; the camera's own records keep local ids)."""
    if offset == 0:
        return job

    def crop(c: FaceCrop | None) -> FaceCrop | None:
        return None if c is None else dataclasses.replace(c, track_id=c.track_id + offset)

    ends = [
        dataclasses.replace(
            e,
            end=dataclasses.replace(e.end, track_id=e.end.track_id + offset),
            best=crop(e.best),
            pooled=[(crop(c), s) for c, s in e.pooled],
        )
        for e in job.ends
    ]
    return TrackJob(crops=[(crop(c), s) for c, s in job.crops], ends=ends, walls=job.walls, after=job.after)


def continued_log(
    system, sources: list[LoggedSource], runs: dict[str, int], in_force: InForce
) -> MatchLogSink:
    """The match log of a restarted embedding service: one writer per source (one track per transaction), each
    continuing its run of ``runs`` (a source not there starts a new one), at the threshold ``in_force``.
    ``system``: a built ``System``."""
    sink = system.match_log([], batch_size=1, threshold=in_force)  # its writers are added here
    gallery = system.gallery
    thumbnails = ThumbnailStore.for_database(gallery.db, gallery.config)
    for s in sources:
        sink.origins[s.name] = s.time_origin
        sink.writers[s.name] = MatchLogWriter(
            gallery.db,
            source=s.name,
            kind=s.kind,
            uri=s.uri,
            config_hash=system.config_hash,
            batch_size=1,
            thumbnails=thumbnails,
            heartbeat_s=system.cfg.gallery.match_log.heartbeat_s,
            continue_run=runs.get(s.name),
            threshold=in_force.value,
            threshold_origin=in_force.origin,
            recorded_at=s.recorded_at,
            time_origin=s.time_origin,
        )
    return sink


def carried(base: CameraSnapshot | None, snap: CameraSnapshot) -> CameraSnapshot:
    """A restarted camera's snapshot with the counters of its earlier actors added (they only ever grow)."""
    if base is None:
        return snap
    fields = ("frames_in", "frames_processed", "dropped", "reconnects", "failures")
    return dataclasses.replace(snap, **{f: getattr(base, f) + getattr(snap, f) for f in fields})
