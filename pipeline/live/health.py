"""Per-camera health: counters kept by the decode threads and the runner, a status line, Prometheus metrics.

``CameraHealth`` is updated from several threads (its methods take a lock); ``HealthRegistry`` holds one per
camera and renders the status line and the Prometheus text format; ``MetricsServer`` serves ``/metrics`` and
``/healthz`` over HTTP from a daemon thread. ``PolledHealth`` stands for a camera whose counters live in another
process (a Ray actor): it holds the latest snapshot the driver polled from there.
Error texts and metric labels go through ``core.secrets.redact_text``: a camera URL's password or token never
reaches a snapshot, the status line or the metrics page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.secrets import redact_text

__all__ = ["CameraHealth", "CameraSnapshot", "HealthRegistry", "MetricsServer", "PolledHealth"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraSnapshot:
    name: str
    state: str  # connecting | connected | waiting | failed | stopped
    connected: bool
    fps_in: float
    fps_processed: float
    frames_in: int
    frames_processed: int
    dropped: int
    reconnects: int
    failures: int
    last_frame_age_s: float | None
    last_error: str | None


class _Rate:
    """Events per second over a sliding window of ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.times: deque[float] = deque()

    def add(self, now: float) -> None:
        self.times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if not self.times:
            return 0.0
        return len(self.times) / self.window_s

    def _trim(self, now: float) -> None:
        while self.times and self.times[0] < now - self.window_s:
            self.times.popleft()


class CameraHealth:
    """Counters of one camera. ``clock`` is ``time.monotonic`` unless a test passes its own."""

    def __init__(self, name: str, fps_window_s: float = 5.0, clock=time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._in = _Rate(fps_window_s)
        self._done = _Rate(fps_window_s)
        self.state = "connecting"
        self.frames_in = 0
        self.frames_processed = 0
        self.dropped = 0
        self.reconnects = 0
        self.failures = 0
        self.last_frame_time: float | None = None
        self.last_error: str | None = None

    def set_state(self, state: str) -> None:
        with self._lock:
            self.state = state

    def frame_in(self) -> None:
        with self._lock:
            now = self._clock()
            self.frames_in += 1
            self.last_frame_time = now
            self._in.add(now)

    def frame_processed(self, n: int = 1) -> None:
        with self._lock:
            now = self._clock()
            self.frames_processed += n
            for _ in range(n):
                self._done.add(now)

    def frame_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def failure(self, reason: str) -> None:
        """A failed connection attempt or a lost stream (``reason`` is kept redacted)."""
        reason = redact_text(reason)
        with self._lock:
            self.failures += 1
            self.last_error = reason

    def reconnected(self) -> None:
        """A stream delivering frames again after a loss."""
        with self._lock:
            self.reconnects += 1

    def snapshot(self) -> CameraSnapshot:
        with self._lock:
            now = self._clock()
            age = None if self.last_frame_time is None else now - self.last_frame_time
            return CameraSnapshot(
                self.name,
                self.state,
                self.state == "connected",
                self._in.rate(now),
                self._done.rate(now),
                self.frames_in,
                self.frames_processed,
                self.dropped,
                self.reconnects,
                self.failures,
                age,
                self.last_error,
            )


class PolledHealth:
    """The health of a camera running elsewhere: the latest snapshot polled from it (``update``); ``failed``
    marks it given up when its process is gone. Until the first poll it reads ``connecting`` with no frames."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._snap = CameraSnapshot(name, "connecting", False, 0.0, 0.0, 0, 0, 0, 0, 0, None, None)

    def update(self, snap: CameraSnapshot) -> None:
        if snap.name != self.name:
            raise ValueError(f"snapshot of camera {self.name!r} expected, got {snap.name!r}")
        with self._lock:
            self._snap = snap

    def failed(self, reason: str) -> None:
        """The camera's process ended without a result: keep its counters, state ``failed``, one more failure."""
        reason = redact_text(reason)
        with self._lock:
            s = self._snap
            self._snap = CameraSnapshot(
                s.name,
                "failed",
                False,
                0.0,
                0.0,
                s.frames_in,
                s.frames_processed,
                s.dropped,
                s.reconnects,
                s.failures + 1,
                s.last_frame_age_s,
                reason,
            )

    def snapshot(self) -> CameraSnapshot:
        with self._lock:
            return self._snap


class HealthRegistry:
    """The health of every camera of a run, in the order they were added."""

    def __init__(self, fps_window_s: float = 5.0, clock=time.monotonic) -> None:
        self.fps_window_s = fps_window_s
        self._clock = clock
        self.cameras: dict[str, CameraHealth | PolledHealth] = {}

    def add(self, name: str) -> CameraHealth:
        if name in self.cameras:
            raise ValueError(f"camera names must be unique, got {name!r} twice")
        self.cameras[name] = CameraHealth(name, self.fps_window_s, self._clock)
        return self.cameras[name]

    def add_polled(self, name: str) -> PolledHealth:
        """A camera whose counters are polled from another process."""
        if name in self.cameras:
            raise ValueError(f"camera names must be unique, got {name!r} twice")
        self.cameras[name] = PolledHealth(name)
        return self.cameras[name]

    def snapshots(self) -> list[CameraSnapshot]:
        return [c.snapshot() for c in self.cameras.values()]

    def status_line(self) -> str:
        parts = []
        for s in self.snapshots():
            age = "-" if s.last_frame_age_s is None else f"{s.last_frame_age_s:.1f}s"
            parts.append(
                f"{s.name}: {s.state} in={s.fps_in:.1f}fps done={s.fps_processed:.1f}fps "
                f"dropped={s.dropped} reconnects={s.reconnects} last={age}"
            )
        return " | ".join(parts) if parts else "no cameras"

    def prometheus_text(self) -> str:
        snaps = self.snapshots()
        metrics = [
            (
                "facemoe_camera_connected",
                "gauge",
                "1 while the camera delivers frames",
                lambda s: int(s.connected),
            ),
            ("facemoe_camera_fps_in", "gauge", "decoded frames per second", lambda s: round(s.fps_in, 3)),
            (
                "facemoe_camera_fps_processed",
                "gauge",
                "frames per second through detection",
                lambda s: round(s.fps_processed, 3),
            ),
            ("facemoe_camera_frames_in_total", "counter", "decoded frames", lambda s: s.frames_in),
            (
                "facemoe_camera_frames_processed_total",
                "counter",
                "frames through detection",
                lambda s: s.frames_processed,
            ),
            (
                "facemoe_camera_frames_dropped_total",
                "counter",
                "frames dropped at the source (newest-frame policy)",
                lambda s: s.dropped,
            ),
            (
                "facemoe_camera_reconnects_total",
                "counter",
                "streams recovered after a loss",
                lambda s: s.reconnects,
            ),
            (
                "facemoe_camera_failures_total",
                "counter",
                "failed connection attempts and lost streams",
                lambda s: s.failures,
            ),
            (
                "facemoe_camera_last_frame_age_seconds",
                "gauge",
                "seconds since the last decoded frame (-1: none yet)",
                lambda s: -1 if s.last_frame_age_s is None else round(s.last_frame_age_s, 3),
            ),
        ]
        lines = []
        for name, kind, help_text, value in metrics:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f'{name}{{camera="{_escape(s.name)}"}} {value(s)}' for s in snaps]
        return "\n".join(lines) + "\n"


def _escape(label: str) -> str:
    return redact_text(label).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """HTTP server of ``/metrics`` (Prometheus text) and ``/healthz`` (the status line) on a daemon thread."""

    def __init__(self, registry: HealthRegistry, host: str = "127.0.0.1", port: int = 0) -> None:
        registry_ref = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype = registry_ref.prometheus_text(), "text/plain; version=0.0.4; charset=utf-8"
                elif self.path == "/healthz":
                    body, ctype = registry_ref.status_line() + "\n", "text/plain; charset=utf-8"
                else:
                    self.send_error(404, f"expected /metrics or /healthz, got {self.path}")
                    return
                data = body.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args) -> None:
                logger.debug("metrics %s", fmt % args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
