"""Accuracy against distance: the friends clip shrunk until its faces are 64 to 8 px, through the real pipeline.

Distance is synthesised from real labelled footage. A few short segments of the shared friends clip (1280x720,
six people, who is on screen when in the ground-truth CSV) are each measured once with the detector on their
original frames (median face size: the shorter side of the SCRFD box), then every frame of the segment is
downscaled by the factor that makes that median face the target size and pasted at a fixed random (seeded)
position of a 1920x1080 canvas (``--canvas 4k``: 3840x2160) on a smooth neutral background. Optional losses:
Gaussian blur of the shrunk frame (``--blur``, atmospheric), noise on the canvas (``--noise``) and JPEG
(``--jpeg``). Each (size, segment) is encoded as a real video file (PyAV, h264, else mpeg4) in a temporary folder,
so the pipeline decodes it like any file, and the file runner (``FileRunner`` built by ``build(cfg,
gallery_dir=friends_gallery)``, a temporary database) processes it with two settings:

- baseline: ``configs/test.yaml`` as is (SCRFD-500M at 640, no tiling, the whole frame every frame);
- long range: the same plus ``detect.tiling=auto``, ``detect.min_face_px=8`` (``--min-face-px``; ``size`` = the
  target size) and ``detect.full_every=5`` (``--long-set``: more overrides of this setting only).

Per face size and setting:
- detection recall: the faces the detector finds on the original frame (whole frame at 640, same threshold),
  mapped through the downscale and the offset, matched one-to-one (IoU >= 0.3) to the pipeline's detections
  on the synthetic frame (every detection of the schedule, before tracking);
- track rank-1: each confirmed track's time span and median box centre mapped back to the original clip and
  assigned to the ground-truth person with ``facemoe.evaluate.video`` (as ``eval video`` does), its template
  scored against the six enrolled people; rank-1 over the mated tracks;
- TPIR at FPIR 1%: only with at least 100 non-mated tracks (one false alarm at 1%), else n/a;
- frames/s of the whole run (decode to match) and its ratio to the baseline measured in the same run.

    python bench/longrange.py [--sizes 64 32 24 16 12 8] [--segments 1.0 6.0 13.0] [--frames 24]
        [--canvas hd|4k] [--blur SIGMA] [--noise STD] [--jpeg QUALITY] [--min-face-px 8|size]
        [--set key=value ...] [--long-set key=value ...] [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.longrange_report import print_table, save_plots
from core.types import Detections
from facemoe.evaluate.video import GroundTruthSpan, ScoredTrack, evaluate_tracks, read_ground_truth
from pipeline.build import System, build
from pipeline.config import load_config
from pipeline.eval_video import median_centre
from pipeline.runner import FileRunner
from pipeline.sinks import CollectSink
from pipeline.sources import FileSource
from stages.detect import FaceDetector
from stages.track import iou_matrix

ASSETS = ROOT.parent / "shared" / "assets"
CLIP = "friends_in_video.mp4"
GROUND_TRUTH = ROOT / "tests" / "facemoe" / "evaluate" / "data" / "friends_in_video_gt.csv"
CANVAS = {"hd": (1920, 1080), "4k": (3840, 2160)}
SIZES = (64, 32, 24, 16, 12, 8)
SEGMENTS = (1.0, 6.0, 13.0)  # seconds: Rachel and Joey, Monica and Chandler, Phoebe and Ross
MATCH_IOU = 0.3
FPIR = 0.01


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


class RecordingDetector:
    """The pipeline's detector, keeping every frame's detections in call order (the runner detects the files one
    after another, their frames in order), for the recall figure."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self.found: list[Detections] = []

    def detect(
        self, images: list[np.ndarray], regions: list[np.ndarray | None] | None = None
    ) -> list[Detections]:
        out = self.detector.detect(images, regions)
        self.found.extend(out)
        return out


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


def matched(truth: np.ndarray, found: np.ndarray) -> int:
    """Faces of ``truth`` matched one-to-one (greedy, best IoU first, IoU >= MATCH_IOU) to ``found``."""
    if not len(truth) or not len(found):
        return 0
    m = iou_matrix(truth, found)
    hits = 0
    while m.size and m.max() >= MATCH_IOU:
        i, j = np.unravel_index(int(m.argmax()), m.shape)
        hits += 1
        m[i, :], m[:, j] = -1, -1
    return hits


def run_setting(
    system: System, cfg, placements: list[Placement], spans: list[GroundTruthSpan], names: list[str]
) -> dict:
    """One pipeline run over a size's files: recall, rank-1, TPIR at FPIR 1%, frames/s."""
    recorder = RecordingDetector(system.detector)
    collect = CollectSink()
    runner = FileRunner(cfg, recorder, system.embedder, system.matcher(), [collect], keep_boxes=True)
    stats = runner.run([FileSource(p.path, cfg.source) for p in placements])
    faces = hits = extra = 0
    cursor = 0
    for p in placements:
        for truth in p.segment.faces:
            found = recorder.found[cursor].xyxy
            cursor += 1
            k = matched(p.to_canvas(truth), found)
            faces, hits, extra = faces + len(truth), hits + k, extra + len(found) - k
    if cursor != len(recorder.found):
        raise RuntimeError(f"expected {cursor} detected frames, the pipeline detected {len(recorder.found)}")
    by_source = {str(p.path): p for p in placements}
    tracks = []
    for template, _ in collect.results:
        p = by_source[template.source_id]
        centre = median_centre(stats.boxes.get(template.source_id, []), template.track_id)
        scores = None
        if template.num_crops > 0:
            row = system.gallery.search(
                np.asarray(template.embedding, np.float32)[None], len(names), system.embedder.embedder_id
            )[0]
            by_name = {name: score for _, name, score in row}
            scores = np.asarray([by_name[n] for n in names], np.float64)
        tracks.append(
            ScoredTrack(
                CLIP,
                template.track_id,
                p.segment.start_s + template.first_timestamp,
                p.segment.start_s + template.last_timestamp,
                scores,
                p.to_original(*centre) if centre else None,
            )
        )
    result = evaluate_tracks(tracks, spans, names, ranks=(1,), fpir_targets=(FPIR,))
    non_mated = result.counts["non_mated_tracks"]
    tpir = result.metrics.get("tpir@fpir=1e-2") if non_mated * FPIR >= 1 else None
    return {
        "faces": faces,
        "recall": hits / faces if faces else None,
        "false_detections": extra,
        "tracks": len(tracks),
        "mated_tracks": result.counts["mated_tracks"],
        "non_mated_tracks": non_mated,
        "rank1": result.metrics["rank-1"],
        "tpir_at_fpir_1pct": tpir,
        "frames": stats.frames,
        "seconds": stats.seconds["total"],
        "fps": stats.frames / max(stats.seconds["total"], 1e-9),
    }


def gallery_names(system: System) -> list[str]:
    embedder = system.embedder.embedder_id
    return sorted(i.name for i in system.gallery.identities() if embedder in i.embedders)


def bench(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    gallery = ASSETS / "images" / "friends_gallery"
    clip = ASSETS / "videos" / CLIP
    spans = [s for s in read_ground_truth(GROUND_TRUTH) if s.video == CLIP]
    base_cfg = load_config(args.config, args.overrides)
    with av.open(str(clip)) as container:
        fps = container.streams.video[0].average_rate
    rows: dict[float, dict] = {s: {"size": s} for s in args.sizes}
    with tempfile.TemporaryDirectory(prefix="longrange-") as tmp:
        with build(base_cfg, gallery_dir=gallery) as system:
            segments = read_segments(clip, args.segments, args.frames, system.detector)
            placements: dict[float, list[Placement]] = {}
            for size in args.sizes:
                placements[size] = [
                    write_clip(
                        Path(tmp) / f"size{size:g}_seg{k}.mp4",
                        seg,
                        size,
                        CANVAS[args.canvas],
                        np.random.default_rng([args.seed, round(size * 100), k]),
                        args,
                        fps,
                    )
                    for k, seg in enumerate(segments)
                ]
            names = gallery_names(system)
            for size in args.sizes:
                rows[size]["baseline"] = run_setting(system, base_cfg, placements[size], spans, names)
        groups: dict[str, list[float]] = {}  # one build per min_face_px value
        for size in args.sizes:
            groups.setdefault(f"{size:g}" if args.min_face_px == "size" else args.min_face_px, []).append(
                size
            )
        for min_face_px, sizes in groups.items():
            long_cfg = load_config(
                args.config, [*args.overrides, *long_range_overrides(min_face_px), *args.long_overrides]
            )
            with build(long_cfg, gallery_dir=gallery) as system:
                for size in sizes:
                    rows[size]["long_range"] = run_setting(system, long_cfg, placements[size], spans, names)
    return {
        "clip": CLIP,
        "canvas": list(CANVAS[args.canvas]),
        "segments": [
            {"start_s": round(s.start_s, 3), "frames": len(s.frames), "face_px": round(s.face_px, 1)}
            for s in segments
        ],
        "degradation": {"blur": args.blur, "noise": args.noise, "jpeg": args.jpeg},
        "overrides": {
            "both": list(args.overrides),
            "long_range": [
                *long_range_overrides("<size>" if args.min_face_px == "size" else args.min_face_px),
                *args.long_overrides,
            ],
        },
        "sizes": [rows[s] for s in args.sizes],
        "runtime_s": round(time.perf_counter() - started, 1),
    }


def long_range_overrides(min_face_px: str) -> list[str]:
    """The long-range setting on top of the baseline config."""
    return ["detect.tiling=auto", f"detect.min_face_px={min_face_px}", "detect.full_every=5"]


def size_arg(text: str) -> float:
    value = float(text)
    if not 4 <= value <= 256:
        raise argparse.ArgumentTypeError(f"face size must be within [4, 256] px, got {text}")
    return value


def min_face_arg(text: str) -> str:
    if text != "size" and not 1 <= float(text) <= 256:
        raise argparse.ArgumentTypeError(f"expected 'size' or a number of px within [1, 256], got {text}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=size_arg, default=list(SIZES), help="face sizes (px)")
    parser.add_argument(
        "--segments",
        nargs="+",
        type=float,
        default=list(SEGMENTS),
        help="start seconds in the friends clip of each segment",
    )
    parser.add_argument(
        "--frames", type=int, default=24, choices=range(4, 241), metavar="4..240", help="frames per segment"
    )
    parser.add_argument("--canvas", choices=sorted(CANVAS), default="hd")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian sigma (px) on the shrunk frame")
    parser.add_argument(
        "--noise", type=float, default=0.0, help="Gaussian noise std (grey levels) on the canvas"
    )
    parser.add_argument(
        "--jpeg", type=int, default=0, choices=range(0, 101), metavar="0..100", help="JPEG quality (0 = none)"
    )
    parser.add_argument("--min-face-px", type=min_face_arg, default="8", help="long range: px or 'size'")
    parser.add_argument("--seed", type=int, default=0, help="placement and background seed")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "test.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--long-set",
        dest="long_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="long range only, after its own settings",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--plots", type=Path, help="save recall and rank-1 against face size (PNG) here")
    args = parser.parse_args(argv)
    if not 0 <= args.blur <= 20 or not 0 <= args.noise <= 64 or len(args.segments) > 10:
        parser.error("expected --blur within [0, 20], --noise within [0, 64] and at most 10 segments")
    logging.basicConfig(level=logging.WARNING)
    if not (ASSETS / "videos" / CLIP).is_file():
        print(f"shared assets not found at {ASSETS}", file=sys.stderr)
        return 2
    out = bench(args)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.plots:
        for path in save_plots(out, args.plots):
            print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
