"""Live video sources (RTSP and other network URLs) that survive faults and never fall behind.

Each camera has one decode thread (``LiveSource``). A stream that cannot be opened, stalls (no packet within
the read timeout), ends or errors is a loss: the thread logs it, counts it in the camera's health, waits a
capped exponential backoff with jitter and tries again, forever unless ``reconnect.max_attempts`` is set.
Decoded frames go into a small newest-first buffer: when the consumer is slower than the camera the oldest
buffered frame is dropped (and counted), so the consumer always gets recent frames.

``Frame.timestamp`` of a live frame is the time it was decoded, in seconds since the source (or its
``LiveCameras`` group) was created: a monotonic clock, continuous across reconnects (with ``timestamps:
stream``, the stream's pts instead, continued one frame interval past the last frame at a reconnect and
unwrapped where it steps back: :class:`pipeline.runners.timeline.PtsUnwrapper`); ``Frame.index`` counts the camera's
frames across reconnects.
``Frame.wall_time`` is the camera's clock (``time_origin`` ``camera``): where FFmpeg knows the wall clock of the
stream's pts from RTCP sender reports (``start_time_realtime``, RTSP), that clock plus the frame's pts, unless it
is further than ``live.camera_clock_max_skew_s`` from the local clock (a camera clock that is wrong: warned once
per connection); else the frame's arrival (``time.time()`` when decoded). Either is kept strictly increasing
(:class:`WallClock`).
``LiveSource.generation`` grows by one at each loss of a stream that had delivered frames: a consumer seeing it
change closes that camera's open tracks.
A camera's URL is opened with its password read from ``password_env`` at that moment; logs and health show the
redacted URL and redacted error texts (FFmpeg's may quote the URL), never a credential.
Each camera decodes on the device its ``decode`` setting picks (:mod:`pipeline.live.decode`: hardware where
available, else the CPU), logged once when the camera is set up.
The camera's privacy masks (``zones`` with ``mask: true``, :mod:`stages.zones`) are blacked out of each decoded
frame here, before it is buffered: no runner, detector, thumbnail or snapshot ever sees the masked pixels.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone

import av

from core.errors import ConfigError
from core.secrets import redact_text
from core.types import Frame
from pipeline.live.config import CameraConfig, LiveConfig, ReconnectConfig
from pipeline.live.decode import choose_decoder
from pipeline.live.health import CameraHealth, HealthRegistry
from pipeline.runners.timeline import PtsUnwrapper
from stages.zones import Zones

__all__ = [
    "LiveCameras",
    "LiveSource",
    "WallClock",
    "backoff_delay",
    "open_options",
    "rtsp_timeout_option",
]

logger = logging.getLogger(__name__)


def backoff_delay(attempt: int, cfg: ReconnectConfig, rng: random.Random) -> float:
    """Wait before reconnect attempt ``attempt`` (0-based): ``initial * multiplier**attempt`` capped at ``max_s``,
    scaled by a uniform factor in ``1 +- jitter``, and never above ``max_s``."""
    base = cfg.initial_s * cfg.multiplier ** min(attempt, 200)
    base = min(base, cfg.max_s)
    return min(cfg.max_s, base * (1.0 + cfg.jitter * rng.uniform(-1.0, 1.0)))


def rtsp_timeout_option() -> str:
    """Name of the RTSP demuxer's socket I/O timeout for the linked FFmpeg: ``timeout`` from libavformat 59
    (FFmpeg 5) on, where ``stimeout`` was removed; ``stimeout`` before."""
    major = av.library_versions["libavformat"][0]
    return "timeout" if major >= 59 else "stimeout"


def open_options(url: str, transport: str, read_timeout_s: float) -> dict[str, str]:
    """FFmpeg options for a live URL: RTSP transport and socket timeout, or the generic protocol timeout."""
    micros = str(int(read_timeout_s * 1_000_000))
    if url.lower().startswith(("rtsp://", "rtsps://")):
        opts = {rtsp_timeout_option(): micros}
        if transport != "auto":
            opts["rtsp_transport"] = transport
        return opts
    return {"rw_timeout": micros}


class WallClock:
    """Strictly increasing wall-clock times (seconds since the epoch) for one camera's frames.

    ``stamp(camera_time)``: the camera's own time of the frame when known, else the local clock now. A local clock
    that steps back (NTP correction) is not followed at once: the times then advance at half the monotonic rate
    until the clock catches up; a camera time not after the last one comes 1 us after it."""

    def __init__(
        self, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._last: float | None = None
        self._last_mono = 0.0

    def stamp(self, camera_time: float | None = None) -> float:
        now, mono = self._clock(), self._monotonic()
        value = now if camera_time is None else camera_time
        if self._last is not None:
            pace = 0.5 * max(mono - self._last_mono, 0.0) if camera_time is None else 0.0
            value = max(value, self._last + max(pace, 1e-6))
        self._last, self._last_mono = value, mono
        return value


class LiveSource:
    """One camera: a decode thread with reconnects, feeding a newest-frames buffer of ``buffer_frames``."""

    def __init__(
        self,
        camera: CameraConfig,
        live: LiveConfig,
        health: CameraHealth,
        wakeup: threading.Condition | None = None,
        seed: int | None = None,
        epoch: float | None = None,
    ) -> None:
        if camera.name is None:
            raise ValueError(
                "LiveSource: expected a named camera (live_config.name_cameras names them), got one without name"
            )
        self.camera = camera
        self.name = camera.name
        self.time_origin = "camera"  # where Frame.wall_time comes from
        self.transport = camera.transport or live.transport
        self.open_timeout_s = camera.open_timeout_s or live.open_timeout_s
        self.read_timeout_s = camera.read_timeout_s or live.read_timeout_s
        self.decoder = choose_decoder(camera.decode or live.decode)  # hardware or CPU: pipeline.live.decode
        logger.info("camera %s: %s decode (%s)", self.name, self.decoder.kind, self.decoder.why)
        self.reconnect = live.reconnect
        self.health = health
        self.wakeup = wakeup or threading.Condition()
        self.generation = 0
        self._rng = random.Random(seed)
        self._buffer: deque[Frame] = deque()
        self._capacity = live.buffer_frames
        self._drop = live.drop_frames
        self._stream_time = live.timestamps == "stream"
        self._pts = PtsUnwrapper()  # stream timestamps: pts made monotonic, continued across reconnects
        self._wall = WallClock()
        self._max_skew = live.camera_clock_max_skew_s
        self.zones = Zones(camera.zones)  # privacy masks are blacked out of every frame before it is buffered
        self._skew_warned = False
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._t0 = time.monotonic() if epoch is None else epoch
        # the wall clock of stream time 0 (of the arrival clock: the moment the source's clock started)
        self.recorded_at = datetime.fromtimestamp(time.time() - self.now(), timezone.utc)
        self._index = 0
        self._thread = threading.Thread(target=self._run, name=f"decode-{self.name}", daemon=True)

    # consumer side -------------------------------------------------------------------------------------------
    def start(self) -> LiveSource:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the decode thread to end (it notices within one packet or one read timeout)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """The decode thread is running (False once stopped or given up)."""
        return self._thread.is_alive()

    def now(self) -> float:
        """The source's clock: seconds since creation (or ``epoch``), the time base of its frames' timestamps."""
        return time.monotonic() - self._t0

    def read(self) -> Frame | None:
        """The oldest frame still buffered (with one-frame buffering: the newest), or None."""
        with self._lock:
            if not self._buffer:
                return None
            self._space.notify()
            return self._buffer.popleft()

    # decode thread -------------------------------------------------------------------------------------------
    def _timestamp(self, pts_s: float | None) -> float:
        """Frame time: the clock (``arrival``), or the stream's pts continued across reconnects (``stream``). A
        frame without pts (RTSP gives the first keyframe none) comes one frame interval after the last."""
        return self._pts(pts_s) if self._stream_time else self.now()

    def _wall_time(self, pts_s: float | None, realtime_us: int | None) -> float:
        """The frame's wall clock: the camera's (RTCP sender reports: ``realtime_us``, the wall clock of pts 0 in
        microseconds) when known and plausible, else its arrival; strictly increasing."""
        camera = None
        if realtime_us is not None and pts_s is not None:
            camera = realtime_us / 1e6 + pts_s
            skew = camera - time.time()
            if self._max_skew is not None and abs(skew) > self._max_skew:
                if not self._skew_warned:
                    self._skew_warned = True
                    logger.warning(
                        "camera %s: its clock is %+.1f s from this machine's (more than camera_clock_max_skew_s "
                        "%.0f s): frames are timed by their arrival",
                        self.name,
                        skew,
                        self._max_skew,
                    )
                camera = None
        return self._wall.stamp(camera)

    def _push(self, image, pts_s: float | None, realtime_us: int | None = None) -> None:
        ts, wall = self._timestamp(pts_s), self._wall_time(pts_s, realtime_us)
        frame = Frame(self.name, self._index, ts, self.zones.apply(image), wall)
        self._index += 1
        with self._lock:
            while not self._drop and len(self._buffer) >= self._capacity and not self._stop.is_set():
                self._space.wait(0.1)
            if len(self._buffer) >= self._capacity:
                self._buffer.popleft()
                self.health.frame_dropped()
            self._buffer.append(frame)
        self.health.frame_in()
        with self.wakeup:
            self.wakeup.notify_all()

    def _run(self) -> None:
        failures = 0  # failed attempts in a row
        delivered_before = False
        while not self._stop.is_set():
            self.health.set_state("connecting")
            got, reason = self._stream_once(delivered_before)
            reason = redact_text(reason)
            if self._stop.is_set():
                break
            if got:
                delivered_before = True
                failures = 0
                with self._lock:
                    while not self._drop and self._buffer and not self._stop.is_set():
                        self._space.wait(0.1)  # recorded sources: every frame reaches the consumer first
                    self._buffer.clear()
                    self.generation += 1
            failures += 1
            self.health.failure(reason)
            limit = self.reconnect.max_attempts
            if limit is not None and failures >= limit:
                logger.error(
                    "camera %s: giving up after %d failed attempts in a row (last: %s)",
                    self.name,
                    failures,
                    reason,
                )
                self.health.set_state("failed")
                self._notify()
                return
            delay = backoff_delay(failures - 1, self.reconnect, self._rng)
            logger.warning(
                "camera %s: %s; reconnecting in %.1fs (attempt %d%s)",
                self.name,
                reason,
                delay,
                failures,
                f" of {limit}" if limit else "",
            )
            self.health.set_state("waiting")
            self._notify()
            self._stop.wait(delay)
        self.health.set_state("stopped")
        self._notify()

    def _notify(self) -> None:
        with self.wakeup:
            self.wakeup.notify_all()

    def _stream_once(self, delivered_before: bool) -> tuple[bool, str]:
        """Open, decode until stop/end/error; returns (delivered any frame, why it ended)."""
        got = False
        self._pts.new_part()
        self._skew_warned = False
        last_data = time.monotonic()
        try:
            url = self.camera.open_url()  # the password from the environment, now; never kept
            logger.debug("camera %s: opening %s", self.name, self.camera.display_url)
            options = open_options(url, self.transport, self.read_timeout_s)
            timeout = (self.open_timeout_s, self.read_timeout_s)
            with av.open(url, options=options, timeout=timeout, hwaccel=self.decoder.hwaccel) as c:
                if not c.streams.video:
                    return False, "no video stream in the source"
                stream = c.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self._pts.interval = 1.0 / float(rate) if rate else 1e-3  # for frames without pts
                for packet in c.demux(stream):
                    last_data = time.monotonic()
                    if self._stop.is_set():
                        return got, "stopped"
                    try:
                        frames = packet.decode()
                    except av.InvalidDataError:
                        continue  # a damaged packet (lost RTP data): skip it, the next keyframe recovers
                    for f in frames:
                        if not got:
                            got = True
                            self.health.set_state("connected")
                            if delivered_before:
                                self.health.reconnected()
                                logger.warning("camera %s: stream recovered", self.name)
                            else:
                                logger.info(
                                    "camera %s: connected to %s (%dx%d)",
                                    self.name,
                                    self.camera.display_url,
                                    f.width,
                                    f.height,
                                )
                        pts_s = None if f.time is None else float(f.time)
                        self._push(f.to_ndarray(format="bgr24"), pts_s, c.start_time_realtime)
            return got, "stream ended"
        except av.FFmpegError as exc:
            # FFmpeg reports its own socket timeout on RTSP as "invalid data": tell a timeout by the silence
            idle = time.monotonic() - last_data
            if isinstance(exc, TimeoutError) or idle >= 0.9 * min(self.open_timeout_s, self.read_timeout_s):
                return got, f"timed out: no data for {idle:.1f}s ({exc.strerror or exc})"
            return got, f"{type(exc).__name__}: {exc.strerror or exc}"
        except OSError as exc:
            return got, f"{type(exc).__name__}: {exc}"
        except ConfigError as exc:  # the password's environment variable is unset
            return got, str(exc)


class LiveCameras:
    """Several cameras in one process: one ``LiveSource`` each, sharing one wake-up condition."""

    def __init__(
        self,
        cameras: tuple[CameraConfig, ...] | list[CameraConfig],
        live: LiveConfig,
        registry: HealthRegistry,
        seed: int | None = None,
    ) -> None:
        self.wakeup = threading.Condition()
        self.epoch = time.monotonic()
        self.sources = [
            LiveSource(
                c, live, registry.add(c.name), self.wakeup, None if seed is None else seed + i, self.epoch
            )
            for i, c in enumerate(cameras)
        ]

    def start(self) -> LiveCameras:
        for s in self.sources:
            s.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop every decode thread; True when all ended within ``timeout`` seconds."""
        for s in self.sources:
            s.stop()
        deadline = time.monotonic() + timeout
        return all(s.join(max(0.0, deadline - time.monotonic())) for s in self.sources)

    @property
    def alive(self) -> bool:
        return any(s.alive for s in self.sources)

    def now(self) -> float:
        """The shared clock of every camera's frame timestamps (seconds since this group was made)."""
        return time.monotonic() - self.epoch

    def wait(self, timeout: float) -> None:
        """Sleep until some camera has a frame or changes state, at most ``timeout`` seconds."""
        with self.wakeup:
            self.wakeup.wait(timeout)

    def poll(self) -> list[Frame]:
        """The buffered frames of every camera (with one-frame buffering: each camera's newest)."""
        frames = []
        for s in self.sources:
            while (f := s.read()) is not None:
                frames.append(f)
        return frames
