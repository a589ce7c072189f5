"""The clip cutter: a time window of one or more video files as one MP4, the track's box drawn on every frame.

:func:`cut_clip` decodes one or more video files (:class:`ClipPart`: a file, the offset that maps its times to
the track's time base and its own frame filter, a recording's privacy masks), keeps the frames of a time window,
applies the part's filter then an optional per-frame filter ``(image, t) -> image`` (redaction), draws the
track's box (:mod:`gallery.track_boxes` rows ``[K, 5]`` ``t, x1, y1, x2, y2``) and writes H.264 (libx264,
yuv420p, even dimensions) into an MP4 whose index is at its start (``movflags +faststart``: a browser plays it
while it downloads), atomically and owner-only (0600).

What a logged track's clip is cut from, and the cached clip of one, are :mod:`pipeline.services.footage`'s.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from gallery.track_boxes import box_at
from gallery.track_files import clip_path
from pipeline.errors import PipelineError
from pipeline.runners.sources import FileSource, open_video

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MARGIN_S",
    "Clip",
    "ClipError",
    "ClipPart",
    "FrameFilter",
    "clip_rel",
    "cut_clip",
    "track_box",
]

DEFAULT_MARGIN_S = 2.0  # seconds of the source kept before and after a track
BOX_COLOUR = (0, 220, 0)  # BGR
TIME_BASE = Fraction(1, 90000)  # of the written frames: any source rate, variable included
EDGE_S = 0.02  # a box is drawn from this long before the track's first row to this long after its last
FrameFilter = Callable[[np.ndarray, float], np.ndarray]


class ClipError(PipelineError):
    """A clip that cannot be cut: the source file is gone or changed, no recording covers the track, no frame."""


@dataclass(frozen=True)
class ClipPart:
    """One video file of a clip; ``offset``: the track time of the file's time 0 (a file source: 0; a camera
    recording: the segment's start in the track's time base); ``frame_filter``: applied to this file's frames
    before any other (a recording's privacy masks)."""

    path: Path
    offset: float = 0.0
    frame_filter: FrameFilter | None = None


@dataclass(frozen=True)
class Clip:
    """A written clip: its file, the track-time window of its first and last frame, frames written, size in px and
    on how many frames the track's box was drawn."""

    path: Path
    start: float
    end: float
    frames: int
    width: int
    height: int
    boxed: int


def _frames(part: ClipPart, start: float, end: float):
    """``(track time, upright BGR image)`` of every frame of ``part`` whose track time is in ``[start, end)``."""
    container, stream = open_video(part.path)
    try:
        stream.thread_type = "AUTO"
        base = stream.time_base or TIME_BASE
        origin = float(stream.start_time * base) if stream.start_time is not None else 0.0
        first = start - part.offset
        if first > 0:
            container.seek(int((first + origin) / base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * base) - origin + part.offset
            if t < start - 1e-6:
                continue
            if t >= end - 1e-6:
                return
            yield t, FileSource._upright(frame)
    except av.FFmpegError as exc:
        raise ClipError(f"clip: cannot decode {part.path}: {str(exc).splitlines()[0]}") from None
    finally:
        container.close()


def track_box(boxes: np.ndarray, t: float) -> np.ndarray | None:
    """The box ``[4]`` of a track with rows ``boxes`` ``[K, 5]`` at time ``t``: None outside its first and last
    row (within ``EDGE_S``) and where :func:`gallery.track_boxes.box_at` has none."""
    if not len(boxes) or t < boxes[0, 0] - EDGE_S or t > boxes[-1, 0] + EDGE_S:
        return None
    return box_at(boxes, t)


def draw_box(image: np.ndarray, box: np.ndarray) -> None:
    """Draw ``box`` ``[4]`` (x1, y1, x2, y2 in px) on ``image`` in place."""
    h, w = image.shape[:2]
    thick = max(2, round(min(h, w) / 300))
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(image, (max(0, x1), max(0, y1)), (min(w - 1, x2), min(h - 1, y2)), BOX_COLOUR, thick)


def _private_folder(folder: Path) -> None:
    """Create ``folder`` and missing parents owner-only (0700); existing folders keep their mode."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for part in reversed(missing):
        try:
            part.mkdir(mode=0o700)
        except FileExistsError:
            continue


def cut_clip(
    parts: Sequence[ClipPart],
    start: float,
    end: float,
    out: Path,
    boxes: np.ndarray | None = None,
    frame_filter: FrameFilter | None = None,
    crf: int = 23,
    preset: str = "veryfast",
) -> Clip:
    """Write the frames of ``parts`` (in order, times increasing) whose track time is in ``[start, end)`` to the
    MP4 ``out`` (H.264, yuv420p, +faststart, 0600, written under a temporary name and renamed). Each frame goes
    through its part's filter, then ``frame_filter(image, t)``, then gets the box of ``boxes`` ``[K, 5]`` at its
    time drawn (none where the track was not seen). The clip's times start at its first frame. Raises
    :class:`ClipError` when no frame falls in the window."""
    if not end > start:
        raise ClipError(f"clip: expected a window whose end is after its start, got {start:.3f}-{end:.3f} s")
    boxes = np.zeros((0, 5), np.float32) if boxes is None else boxes
    out = Path(out)
    _private_folder(out.parent)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    container = None
    first = last = None
    written = boxed = 0
    size = (0, 0)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        for part in parts:
            for t, image in _frames(part, start, end):
                if last is not None and t <= last + 1e-6:
                    continue  # parts that overlap: each instant once
                if part.frame_filter is not None:
                    image = part.frame_filter(image, t)
                if frame_filter is not None:
                    image = frame_filter(image, t)
                box = track_box(boxes, t)
                if box is not None:
                    draw_box(image, box)
                    boxed += 1
                h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
                if container is None:
                    container, stream = _open_output(tmp, part.path, w, h, crf, preset)
                    size, first = (w, h), t
                elif (w, h) != size:
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                    h, w = size[1], size[0]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
                frame.pts = round((t - first) / TIME_BASE)
                frame.time_base = TIME_BASE
                for packet in stream.encode(frame):
                    container.mux(packet)
                written += 1
                last = t
        if container is None:
            raise ClipError(
                f"clip: no frame of {', '.join(p.path.name for p in parts) or 'no file'} between "
                f"{start:.2f} and {end:.2f} s"
            )
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        container = None
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except BaseException:
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass
        tmp.unlink(missing_ok=True)
        raise
    logger.info("clip %s: %d frames %.2f-%.2f s, box on %d", out.name, written, first, last, boxed)
    return Clip(out, float(first), float(last), written, size[0], size[1], boxed)


def _open_output(tmp: Path, source: Path, width: int, height: int, crf: int, preset: str):
    """An MP4 container at ``tmp`` with one libx264 stream of ``width`` x ``height`` at the rate of ``source``."""
    with av.open(str(source)) as probe:
        rate = probe.streams.video[0].average_rate or Fraction(25)
    container = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = TIME_BASE
    stream.codec_context.time_base = TIME_BASE
    stream.options = {"crf": str(crf), "preset": preset}
    return container, stream


def clip_rel(source_id: int, run_id: int, track_id: int) -> str:
    """Store-relative path of a track's cached clip, in its thumbnail's folder (:mod:`gallery.track_files`)."""
    return clip_path(source_id, run_id, track_id)
