"""Camera recording: each recorded camera's stream remuxed, without decoding, into MP4 segments indexed in SQL.

One thread per recorded camera (:class:`CameraRecorder`) with its own connection to the camera (the live
sources' open options, timeouts and reconnect backoff: :mod:`pipeline.live.cameras`), so recording goes on whatever
detection does. A segment starts on a keyframe once ``segment_s`` has passed (and at every (re)connect: a
reconnect ends the segment); while written it is a fragmented MP4 (``frag_keyframe+empty_moov``) under a
temporary name, so a killed process leaves a readable prefix; closing renames it and marks its row done
(:mod:`gallery.recordings`). The row keeps the camera's privacy masks in force (:func:`camera_masks`): the segment
is stored as the camera sent it, clips cut from it are masked.

Timing: a packet's wall clock is the clock of its connection's pts 0 plus its pts. That clock is the camera's
(RTCP ``start_time_realtime``, within ``live.camera_clock_max_skew_s``), else the earliest arrival time minus pts of
the connection's packets so far (a packet never arrives before it was sent; the ones FFmpeg buffered while probing
the stream arrive late). A segment's start and end are set from that clock when it closes, so consecutive segments of
one connection abut. In a file the first frame is at pts 0 (``gallery.recordings.wall_at``).

:func:`pipeline.live.recording_recovery.recover` runs first: segments a killed process left are finalised or discarded.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from fractions import Fraction

import av

from core.errors import ConfigError
from core.secrets import redact_text
from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.recordings import RecordingStore, add_segment, apply_retention, close_segment, discard_segment
from pipeline.live.cameras import backoff_delay, open_options
from pipeline.live.config import CameraConfig, LiveConfig, RecordingConfig
from pipeline.live.recording_recovery import camera_lock, recordings_store, recover

__all__ = ["CameraRecorder", "Recorders", "camera_masks", "record_cameras"]

logger = logging.getLogger(__name__)

FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


class _Segment:
    """One segment being written: its row, its temporary file and the muxer."""

    def __init__(
        self,
        db: Database,
        store: RecordingStore,
        camera: str,
        ins,
        clock: float,
        base: int,
        masks: list | None = None,
    ):
        self.db, self.clock, self.base, self.tb = db, clock, base, ins.time_base
        started_at = self.wall(base)
        rel = store.segment_path(camera, started_at)
        self.final = store.resolve(rel)
        self.part = store.partial(self.final)
        self.id = add_segment(db, camera, started_at, rel, masks)
        try:
            store.create(rel)
            self.out = av.open(str(self.part), "w", format="mp4", options=FRAGMENTED)
            self.stream = self.out.add_stream_from_template(ins)
        except BaseException:
            self.part.unlink(missing_ok=True)
            discard_segment(db, self.id)
            raise
        self.end = 0
        self.last_dts: int | None = None

    def elapsed(self, pts: int) -> float:
        return float((pts - self.base) * self.tb)

    def write(self, packet, interval: int) -> None:
        dts = packet.dts - self.base
        if self.last_dts is not None and dts <= self.last_dts:
            return  # out of order after a loss: the muxer refuses it
        self.last_dts = dts
        packet.pts, packet.dts = packet.pts - self.base, dts
        self.end = max(self.end, packet.pts + (packet.duration or interval))
        packet.stream = self.stream
        self.out.mux(packet)

    def wall(self, pts: int) -> datetime:
        """The wall clock of ``pts`` by the connection's latest clock (``clock``: wall clock of pts 0, s)."""
        return datetime.fromtimestamp(self.clock + float(pts * self.tb), timezone.utc)

    def close(self) -> None:
        self.out.close()
        os.replace(self.part, self.final)
        start, end = self.wall(self.base), self.wall(self.base + self.end)
        close_segment(self.db, self.id, end, self.final.stat().st_size, started_at=start)


def camera_masks(camera: CameraConfig) -> list[dict] | None:
    """The privacy masks of ``camera`` as a segment row keeps them: ``[{"name", "points": [[x, y], ...]}]`` in the
    config's fractions of the frame, None when no zone masks."""
    masks = [{"name": z.name, "points": [list(p) for p in z.points]} for z in camera.zones if z.mask]
    return masks or None


class CameraRecorder:
    """Records one camera until stopped: connect, remux into segments, reconnect with the live backoff."""

    def __init__(
        self,
        camera: CameraConfig,
        segment_s: float,
        live: LiveConfig,
        db: Database,
        store: RecordingStore,
        seed: int | None = None,
    ) -> None:
        self.camera, self.segment_s, self.live, self.db, self.store = camera, segment_s, live, db, store
        self.name = camera.name
        self.transport = camera.transport or live.transport
        self.open_timeout_s = camera.open_timeout_s or live.open_timeout_s
        self.read_timeout_s = camera.read_timeout_s or live.read_timeout_s
        self.segments = 0  # closed segments
        self.bytes = 0
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"record-{self.name}", daemon=True)

    def start(self) -> CameraRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        with camera_lock(self.store, self.store.camera_folder(self.name), wait=True):
            failures = 0
            while not self._stop.is_set():
                wrote, reason = self._record_once()
                if self._stop.is_set():
                    break
                failures = 0 if wrote else failures + 1
                delay = backoff_delay(failures, self.live.reconnect, self._rng)
                logger.warning("camera %s recording: %s; reconnecting in %.1fs", self.name, reason, delay)
                self._stop.wait(delay)

    def _camera_clock(self, container, pts_s: float) -> float | None:
        """The camera's wall clock of pts 0 (s) from RTCP sender reports, when known and plausible."""
        realtime = container.start_time_realtime
        skew = self.live.camera_clock_max_skew_s
        if realtime is None or (skew is not None and abs(realtime / 1e6 + pts_s - time.time()) > skew):
            return None
        return realtime / 1e6

    def _record_once(self) -> tuple[bool, str]:
        """One connection: remux until stop, end or error; returns (wrote a packet, why it ended)."""
        segment: _Segment | None = None
        wrote = False
        try:
            url = self.camera.open_url()
            options = open_options(url, self.transport, self.read_timeout_s)
            with av.open(url, options=options, timeout=(self.open_timeout_s, self.read_timeout_s)) as c:
                if not c.streams.video:
                    return False, "no video stream in the source"
                ins = c.streams.video[0]
                rate = ins.average_rate or ins.guessed_rate or 25
                interval = max(1, int(round(1 / (Fraction(rate) * ins.time_base))))
                earliest: float | None = None  # arrival minus pts (s), the least so far
                for packet in c.demux(ins):
                    if self._stop.is_set():
                        return wrote, "stopped"
                    if packet.pts is None or packet.dts is None or packet.is_corrupt:
                        continue
                    pts_s = float(packet.pts * ins.time_base)
                    arrival = time.time() - pts_s
                    earliest = arrival if earliest is None else min(earliest, arrival)
                    clock = self._camera_clock(c, pts_s)
                    clock = earliest if clock is None else clock
                    if segment is None or (
                        packet.is_keyframe and segment.elapsed(packet.pts) >= self.segment_s
                    ):
                        if not packet.is_keyframe:
                            continue  # a segment starts on a keyframe
                        if segment is not None:
                            segment.clock = clock
                            self._close(segment)
                        segment = None
                        segment = _Segment(
                            self.db, self.store, self.name, ins, clock, packet.pts, camera_masks(self.camera)
                        )
                    segment.clock = clock
                    segment.write(packet, interval)
                    wrote = True
            return wrote, "stream ended"
        except av.FFmpegError as exc:
            return wrote, redact_text(f"{type(exc).__name__}: {exc.strerror or exc}")
        except (OSError, ConfigError) as exc:
            return wrote, redact_text(str(exc))
        except Exception as exc:  # the index refused a row: logged, the camera tried again after a wait
            logger.exception("camera %s recording failed", self.name)
            return wrote, redact_text(f"{type(exc).__name__}: {exc}")
        finally:
            if segment is not None:
                self._close(segment)

    def _close(self, segment: _Segment) -> None:
        try:
            segment.close()
            self.segments += 1
            self.bytes += segment.final.stat().st_size
        except Exception as exc:
            logger.error("camera %s: segment %s not finalised (%s)", self.name, segment.part.name, exc)


class Recorders:
    """The recorders of one process and their periodic retention."""

    def __init__(
        self, recorders: Sequence[CameraRecorder], db: Database, store: RecordingStore, cfg: RecordingConfig
    ):
        self.recorders, self.db, self.store, self.cfg = list(recorders), db, store, cfg
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._retention, name="record-retention", daemon=True)

    def start(self) -> Recorders:
        for r in self.recorders:
            r.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        self._stop.set()
        for r in self.recorders:
            r.stop()
        deadline = time.monotonic() + timeout
        return all(r.join(max(0.0, deadline - time.monotonic())) for r in self.recorders)

    def _retention(self) -> None:
        while True:
            if self.cfg.retention_days is not None or self.cfg.max_bytes is not None:
                try:
                    apply_retention(self.db, self.store, self.cfg.retention_days, self.cfg.max_bytes)
                except Exception as exc:
                    logger.error("recording retention failed: %s", exc)
            if self._stop.wait(self.cfg.retention_every_s):
                return


@contextmanager
def record_cameras(
    live: LiveConfig, cameras: Sequence[CameraConfig], db_url: str | None, gallery: GalleryConfig
) -> Iterator[Recorders | None]:
    """Record the cameras that ``live.recording`` and their ``record`` sections enable, while the context lasts
    (None when none is). The folder is checked writable and interrupted segments recovered first."""
    chosen = [(c, s) for c in cameras if (s := c.recorded(live.recording)) is not None]
    if not chosen:
        yield None
        return
    if db_url is None:
        raise ConfigError("recording: expected --db URL (the recordings index lives in SQL), got none")
    db = Database(db_url)
    try:
        store = recordings_store(db, live.recording, gallery)
        store.check_writable()
        recover(db, store)
        group = Recorders(
            [CameraRecorder(c, s, live, db, store, seed=i) for i, (c, s) in enumerate(chosen)],
            db,
            store,
            live.recording,
        ).start()
        logger.info("recording %s under %s", ", ".join(c.name for c, _ in chosen), store.root)
        try:
            yield group
        finally:
            group.stop()
    finally:
        db.close()
