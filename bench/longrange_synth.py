"""Synthetic long-range clips for bench/longrange.py: segments of a real clip shrunk to a face size and placed on a
large canvas, written as real video files."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import cv2
import numpy as np

from stages.detect import FaceDetector


class Segment(NamedTuple):
    """A run of consecutive original frames, their reference faces (original px) and the median face size."""

    start_s: float
    frames: list[np.ndarray]
    faces: list[np.ndarray]
    face_px: float


class Placement(NamedTuple):
    """One synthetic file: which segment, the downscale factor and where the shrunk frame sits on the canvas."""

    path: Path
    segment: Segment
    factor: float
    offset: tuple[int, int]

    def to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        ox, oy = self.offset
        return boxes * self.factor + np.array([ox, oy, ox, oy], np.float32)

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset[0]) / self.factor, (y - self.offset[1]) / self.factor


def read_segments(path: Path, starts: list[float], frames: int, detector: FaceDetector) -> list[Segment]:
    """``frames`` consecutive frames from each start second, their faces by ``detector`` and median face size."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        fps = float(stream.average_rate)
    segments = []
    for start in starts:
        first = round(start * fps)
        images = decoded[first : first + frames]
        if len(images) < frames:
            raise ValueError(f"segment at {start} s: the clip has only {len(decoded)} frames")
        faces = [d.xyxy.copy() for d in detector.detect(images)]
        boxes = np.concatenate(faces)
        if not len(boxes):
            raise ValueError(f"segment at {start} s: no face found on the original frames")
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        segments.append(Segment(first / fps, images, faces, float(np.median(side))))
    return segments


def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth neutral canvas: a coarse grid of grey-brown levels, upscaled and blurred."""
    w, h = size
    coarse = rng.uniform(90, 160, (9, 16, 1)) + rng.uniform(-8, 8, (9, 16, 3))
    canvas = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(canvas, (0, 0), w / 64).clip(0, 255).astype(np.uint8)


def degrade_frame(image: np.ndarray, factor: float, blur: float) -> np.ndarray:
    """The original frame shrunk by ``factor`` (area interpolation), blurred by ``blur`` px (sigma) if asked."""
    h, w = image.shape[:2]
    small = cv2.resize(
        image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.GaussianBlur(small, (0, 0), blur) if blur > 0 else small


def write_clip(
    path: Path,
    segment: Segment,
    size: float,
    canvas_size: tuple[int, int],
    rng: np.random.Generator,
    args: argparse.Namespace,
    fps: Fraction,
) -> Placement:
    """Encode one segment at face ``size`` as a video file; returns where its frames went."""
    factor = size / segment.face_px
    h, w = segment.frames[0].shape[:2]
    sw, sh = round(w * factor), round(h * factor)
    cw, ch = canvas_size
    if sw > cw or sh > ch:
        raise ValueError(f"face size {size}: the shrunk frame {sw}x{sh} does not fit the {cw}x{ch} canvas")
    offset = (int(rng.integers(0, cw - sw + 1)), int(rng.integers(0, ch - sh + 1)))
    base = background(canvas_size, rng)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = cw, ch, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"} if codec == "libx264" else {"qscale": "2"}
        for image in segment.frames:
            small = degrade_frame(image, factor, args.blur)
            frame = base.copy()
            frame[offset[1] : offset[1] + small.shape[0], offset[0] : offset[0] + small.shape[1]] = small
            if args.noise > 0:
                frame = (frame + rng.normal(0, args.noise, frame.shape)).clip(0, 255).astype(np.uint8)
            if args.jpeg:
                ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, args.jpeg])
                frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Placement(path, segment, factor, offset)
