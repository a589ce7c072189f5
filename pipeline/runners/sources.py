"""Video file sources through PyAV: threaded decode, monotonic timestamps, the wall clock of every frame,
stride / target fps, a time window, rotation metadata honoured, damage reported instead of aborting.

A background thread decodes into a bounded queue, so decoding overlaps detection and never runs more than
``queue_size`` frames ahead. Packets that fail to decode are counted and skipped; everything decodable is
delivered. A file that cannot be opened at all raises :class:`SourceError` when the source is built.

``Frame.timestamp`` is the frame's presentation time in seconds from the file's first frame, made monotonic
(:class:`PtsUnwrapper`): where presentation time steps back (clips joined with ``cat``, a restarted encoder, a
33-bit MPEG-TS wrap FFmpeg did not undo) or, in formats that allow discontinuities (MPEG-TS), jumps ahead by more
than ``source.max_pts_jump_s``, the times go on one frame interval after the last frame; each such
discontinuity is counted (``DecodeReport.discontinuities``, a warning). ``Frame.wall_time`` is the recording
time of the file's stream time 0 (``FileSource.recorded_at``, from :mod:`pipeline.runners.recording_time`;
where it comes from: ``FileSource.time_origin``) plus the frame's timestamp, None when unknown.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from core.types import Frame
from pipeline.config import SourceConfig
from pipeline.errors import SourceError
from pipeline.runners.recording_time import recording_time
from pipeline.runners.timeline import PtsUnwrapper

# AVFMT_TS_DISCONT (libavformat: formats whose timestamps may jump, as MPEG-TS); by value, as PyAV names it
# differently across its versions
TS_DISCONT = 0x0200

__all__ = ["DecodeReport", "FileSource", "open_video"]

logger = logging.getLogger(__name__)

_END = object()


@dataclass
class DecodeReport:
    """What happened while decoding: frames decoded and kept, damaged packets skipped, the first errors, and the
    discontinuities of presentation time unwrapped (restarts, wraps)."""

    decoded: int = 0
    kept: int = 0
    damaged_packets: int = 0
    discontinuities: int = 0
    errors: list[str] = field(default_factory=list)
    ended_early: bool = False

    @property
    def damaged(self) -> bool:
        return self.damaged_packets > 0 or self.ended_early

    def note(self, message: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(message)


def _first_line(exc: BaseException) -> str:
    text = (getattr(exc, "strerror", None) or str(exc)).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def open_video(path: Path):
    """Open ``path`` with PyAV and return ``(container, video stream)``; bad files raise SourceError."""
    if not path.exists():
        raise SourceError(f"video not found: {path}")
    if not path.is_file():
        raise SourceError(f"video path is not a file: {path}")
    if path.stat().st_size == 0:
        raise SourceError(f"video file is empty (0 bytes): {path}")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path} as video: {_first_line(exc)}") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"no video stream in {path}")
    return container, container.streams.video[0]


class FileSource:
    """Frames of one video file (BGR uint8, upright), filtered by the configured window and rate.

    ``recorded_at``: the recording time of stream time 0 when the caller knows it (timezone-aware; wins over the
    container's tag and the file name). ``self.recorded_at`` and ``self.time_origin`` (``given``, ``container``,
    ``filename`` or ``unknown``) say what the frames' ``wall_time`` is based on."""

    def __init__(
        self,
        path: str | Path,
        cfg: SourceConfig,
        source_id: str | None = None,
        recorded_at: datetime | None = None,
    ) -> None:
        if recorded_at is not None and recorded_at.utcoffset() is None:
            raise SourceError(
                f"recorded_at: expected a time with a timezone (e.g. 2026-03-01T10:00:00+01:00), got {recorded_at}"
            )
        self.path = Path(path)
        self.cfg = cfg
        self.source_id = source_id or str(path)
        self._given = recorded_at
        container, stream = open_video(self.path)
        try:
            self.recorded_at, self.time_origin = recording_time(
                self.path,
                recorded_at,
                (dict(container.metadata), dict(stream.metadata)),
                cfg.recorded_at_pattern,
                cfg.recorded_at_zone,
            )
            self._discont = bool(container.format.flags & TS_DISCONT)
            self.fps = float(stream.average_rate) if stream.average_rate else None
            self.width = stream.codec_context.width
            self.height = stream.codec_context.height
            self.frame_count = stream.frames or None
            if self.frame_count and self.fps:
                self.duration = self.frame_count / self.fps
            else:
                self.duration = float(container.duration / av.time_base) if container.duration else None
        finally:
            container.close()
        self.report = DecodeReport()

    def windowed(self, cfg: SourceConfig) -> FileSource:
        """The same file, source id and given recording time, read with ``cfg`` (another window)."""
        return FileSource(self.path, cfg, self.source_id, self._given)

    def expected_frames(self) -> int | None:
        """About how many frames will be kept (for a progress bar), or None when unknown."""
        if not self.fps or not self.duration:
            return None
        end = min(self.cfg.end or self.duration, self.duration)
        seconds = max(0.0, end - self.cfg.start)
        rate = self.fps / self.cfg.stride
        if self.cfg.target_fps:
            rate = min(rate, self.cfg.target_fps)
        return round(seconds * rate)

    def __iter__(self) -> Iterator[Frame]:
        self.report = DecodeReport()
        frames: queue.Queue = queue.Queue(maxsize=self.cfg.queue_size)
        stop = threading.Event()
        worker = threading.Thread(
            target=self._decode, args=(frames, stop), name=f"decode-{self.path.name}", daemon=True
        )
        worker.start()
        try:
            while True:
                item = frames.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a worker waiting on a full queue
                try:
                    frames.get_nowait()
                except queue.Empty:
                    worker.join(0.05)

    def _put(self, frames: queue.Queue, stop: threading.Event, item) -> bool:
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self, frames: queue.Queue, stop: threading.Event) -> None:
        try:
            self._decode_into(frames, stop)
        except Exception as exc:  # noqa: BLE001 - raised again in the consuming thread
            self._put(frames, stop, exc)
        finally:
            self._put(frames, stop, _END)

    def _decode_into(self, frames: queue.Queue, stop: threading.Event) -> None:
        cfg, report = self.cfg, self.report
        container, stream = open_video(self.path)
        try:
            stream.thread_type = "AUTO"
            if cfg.decode_threads:
                stream.codec_context.thread_count = cfg.decode_threads
            base = stream.time_base or Fraction(1, 90000)
            origin = float(stream.start_time * base) if stream.start_time is not None else 0.0
            if cfg.start > 0 and not self._discont:  # where times may restart, pts cannot say where to seek
                container.seek(
                    int((cfg.start + origin) / base), stream=stream, backward=True, any_frame=False
                )
            unwrap = PtsUnwrapper(
                1.0 / self.fps if self.fps else None,
                cfg.max_pts_jump_s if self._discont else None,
                float((1 << 33) * base) if self._discont and base == Fraction(1, 90000) else None,
                origin,
            )
            wall0 = self.recorded_at.timestamp() if self.recorded_at is not None else None
            next_keep = cfg.start
            tolerance = 0.5 / self.fps if self.fps else 0.0  # half a source frame
            counter = in_window = 0
            packets = container.demux(stream)
            while not stop.is_set():
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except (av.FFmpegError, OSError) as exc:
                    report.ended_early = True
                    report.note(f"demux stopped: {_first_line(exc)}")
                    break
                try:
                    decoded = packet.decode()
                except (av.FFmpegError, ValueError) as exc:
                    report.damaged_packets += 1
                    report.note(f"packet at pts {packet.pts}: {_first_line(exc)}")
                    continue
                for frame in decoded:
                    report.decoded += 1
                    t = unwrap(None if frame.pts is None else float(frame.pts * base))
                    report.discontinuities = unwrap.discontinuities
                    counter += 1
                    if t < cfg.start - 1e-6:
                        continue
                    if cfg.end is not None and t > cfg.end + 1e-6:
                        return
                    in_window += 1
                    if (in_window - 1) % cfg.stride:
                        continue
                    if cfg.target_fps:
                        if t < next_keep - tolerance:
                            continue
                        next_keep = max(next_keep + 1.0 / cfg.target_fps, t + 0.5 / cfg.target_fps)
                    image = self._upright(frame)
                    index = round(t * self.fps) if self.fps else counter - 1
                    wall = None if wall0 is None else wall0 + t
                    if not self._put(frames, stop, Frame(self.source_id, index, t, image, wall)):
                        return
                    report.kept += 1
        finally:
            container.close()
            if report.discontinuities:
                logger.warning(
                    "%s: presentation time restarted %d times (joined or restarted recordings); unwrapped: "
                    "the times go on one frame interval after the last frame before each restart",
                    self.path.name,
                    report.discontinuities,
                )
        whole_file = cfg.start == 0 and cfg.end is None and not stop.is_set()
        if whole_file and self.frame_count and report.decoded < self.frame_count - 1:
            report.ended_early = True
            report.note(f"stream ended after {report.decoded} of {self.frame_count} frames (truncated file?)")
        if report.decoded == 0 and not stop.is_set():
            raise SourceError(
                f"no decodable video frames in {self.path}"
                + (f" ({report.errors[0]})" if report.errors else "")
            )

    @staticmethod
    def _upright(frame) -> np.ndarray:
        image = frame.to_ndarray(format="bgr24")
        turns = round((getattr(frame, "rotation", 0) or 0) / 90.0) % 4
        return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image
