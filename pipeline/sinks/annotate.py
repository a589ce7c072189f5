"""Annotated video: the processed frames again, with each tracked face boxed and labelled with its track id
and the track's final decision. Written after the run (names are only final then) by decoding the source a
second time with the same settings; the file appears complete or not at all."""

from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2

from core.types import MatchResult
from pipeline.runners.runner import FrameBoxes
from pipeline.runners.sources import FileSource

__all__ = ["track_labels", "write_annotated"]

logger = logging.getLogger(__name__)

_MATCH = (60, 200, 60)
_UNKNOWN = (0, 165, 255)


def track_labels(results: list[MatchResult]) -> dict[int, tuple[str, bool]]:
    """track id -> (label, matched) for one source."""
    out = {}
    for r in results:
        name = r.identity.name if r.identity else "unknown"
        out[r.track_id] = (f"#{r.track_id} {name}", r.identity is not None)
    return out


def write_annotated(
    source: FileSource, boxes: list[FrameBoxes], labels: dict[int, tuple[str, bool]], target: Path
) -> Path:
    """Encode ``source``'s processed frames with boxes and labels into ``target`` (H.264 MP4)."""
    by_index = {fb.index: fb for fb in boxes}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix or ".mp4", dir=target.parent)
    os.close(fd)
    rate = (source.fps or 25.0) / source.cfg.stride
    if source.cfg.target_fps:
        rate = min(rate, source.cfg.target_fps)
    try:
        with av.open(tmp, mode="w") as out:
            stream = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            for n, frame in enumerate(source):
                image = frame.image.copy()
                if n == 0:  # yuv420p needs even sides
                    stream.width, stream.height = image.shape[1] // 2 * 2, image.shape[0] // 2 * 2
                fb = by_index.get(frame.index)
                if fb is not None:
                    for box, tid in zip(fb.xyxy, fb.track_id):
                        text, matched = labels.get(int(tid), (f"#{int(tid)}", False))
                        colour = _MATCH if matched else _UNKNOWN
                        x1, y1, x2, y2 = (round(v) for v in box)
                        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
                        cv2.putText(
                            image,
                            text,
                            (x1, max(12, y1 - 5)),
                            cv2.FONT_HERSHEY_SIMPLEX,
                            0.5,
                            colour,
                            1,
                            cv2.LINE_AA,
                        )
                image = image[: stream.height, : stream.width]
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("annotated video written: %s", target)
    return target
