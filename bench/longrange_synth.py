"""Synthetic long-range clips for bench/longrange.py: segments of a real clip shrunk to a face size and placed on a
large canvas, written as real video files; optionally with faces of people outside the gallery (labelled photos
shrunk to the same size, still in the background) as non-mated probes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
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


class Impostor(NamedTuple):
    """A labelled photo's face cut out with as much around it again, and the shorter side of the face (px)."""

    name: str
    patch: np.ndarray
    face_px: float


def read_impostors(images: Path, detector: FaceDetector, gallery: str) -> list[Impostor]:
    """The labelled photos (``identities.json``) of people outside ``gallery`` (a folder name of it), each with
    exactly one face as the detector sees a portrait (:meth:`FaceDetector.letterboxed`); others are skipped."""
    labels = json.loads((images / "identities.json").read_text())
    out = []
    for rel, name in sorted(labels.items()):
        photo = None if rel.startswith(f"{gallery}/") else cv2.imread(str(images / rel))
        if photo is None:
            continue
        dets = detector.letterboxed([photo])[0]
        if len(dets) != 1:
            continue
        x1, y1, x2, y2 = dets.xyxy[0]
        half, cx, cy = max(x2 - x1, y2 - y1), (x1 + x2) / 2, (y1 + y2) / 2
        patch = photo[max(0, int(cy - half)) : int(cy + half), max(0, int(cx - half)) : int(cx + half)]
        out.append(Impostor(name, patch, float(min(x2 - x1, y2 - y1))))
    return out


def _free(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    return not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken)


def paste_impostors(
    base: np.ndarray,
    impostors: Sequence[Impostor],
    size: float,
    taken: list[tuple[int, int, int, int]],
    rng: np.random.Generator,
) -> int:
    """Paste each impostor's face, shrunk to ``size`` px, at a random free place of ``base`` (in place; up to
    200 tries each, then it is left out); returns how many were placed."""
    ch, cw = base.shape[:2]
    placed = 0
    for imp in impostors:
        f = size / imp.face_px
        patch = cv2.resize(imp.patch, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        ph, pw = patch.shape[:2]
        for _ in range(200):
            x, y = int(rng.integers(0, cw - pw + 1)), int(rng.integers(0, ch - ph + 1))
            if _free((x, y, x + pw, y + ph), taken):
                base[y : y + ph, x : x + pw] = patch
                taken.append((x, y, x + pw, y + ph))
                placed += 1
                break
    return placed


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
    impostors: Sequence[Impostor] = (),
) -> Placement:
    """Encode one segment at face ``size`` as a video file, with ``impostors`` pasted still around it; returns
    where its frames went."""
    factor = size / segment.face_px
    h, w = segment.frames[0].shape[:2]
    sw, sh = round(w * factor), round(h * factor)
    cw, ch = canvas_size
    if sw > cw or sh > ch:
        raise ValueError(f"face size {size}: the shrunk frame {sw}x{sh} does not fit the {cw}x{ch} canvas")
    offset = (int(rng.integers(0, cw - sw + 1)), int(rng.integers(0, ch - sh + 1)))
    base = background(canvas_size, rng)
    paste_impostors(base, impostors, size, [(offset[0], offset[1], offset[0] + sw, offset[1] + sh)], rng)
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
