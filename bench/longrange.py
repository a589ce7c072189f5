"""Accuracy against distance: the friends clip shrunk until its faces are 64 to 8 px, through the real pipeline.

Distance is synthesised from real labelled footage. A few short segments of the shared friends clip (1280x720,
six people, who is on screen when in the ground-truth CSV) are each measured once with the detector on their
original frames (median face size: the shorter side of the SCRFD box), then every frame of the segment is
downscaled by the factor that makes that median face the target size and pasted at a fixed random (seeded)
position of a 1920x1080 canvas (``--canvas 4k``: 3840x2160) on a smooth neutral background. Optional losses:
Gaussian blur of the shrunk frame (``--blur``, atmospheric), noise on the canvas (``--noise``) and JPEG
(``--jpeg``). Each (size, segment) is encoded as a real video file (PyAV, h264, else mpeg4) in a temporary folder,
so the pipeline decodes it like any file, and the file runner (``FileRunner`` built by ``build(cfg,
gallery_dir=friends_gallery)``, a temporary database) processes it with three settings of ``configs/test.yaml``
(SCRFD-500M + MobileFaceNet):

- baseline: the pipeline before long-range detection: ``detect.tiling=off detect.full_every=1`` (the frame
  letterboxed into the 640 input, every frame);
- long range: the config as it is (``detect.tiling: auto``, ``min_face_px: 12``, ``full_every: 6``);
  ``--min-face-px`` (px, or ``size`` = the target size) and ``--long-set`` override it;
- exhaustive: long range with ``detect.full_every=1``: the frame at native resolution in every frame, what the
  adaptive schedule is measured against.

Per face size and setting:
- detection recall: the faces the detector finds on the original frame (the letterboxed frame, same threshold),
  mapped through the downscale and the offset, matched one-to-one (IoU >= 0.3) to the pipeline's detections
  on the synthetic frame (every detection of the schedule, before tracking); for long range also its recall
  against exhaustive (the faces exhaustive finds in each frame that long range finds too);
- track rank-1: each confirmed track's time span and median box centre mapped back to the original clip and
  assigned to the ground-truth person with ``facemoe.evaluate.video`` (as ``eval video`` does), its template
  scored against the six enrolled people; rank-1 over the mated tracks;
- TPIR at FPIR 1%: only with at least 100 non-mated tracks (one false alarm at 1%), else n/a. Every person of the
  clip is enrolled; ``--impostors N`` pastes, still, around each clip N faces of people outside the gallery (the
  labelled photos, shrunk to the same size): tracks outside the clip overlap nobody and are non-mated;
- frames/s of the whole run (decode to match) and its ratio to the baseline measured in the same run.

    python bench/longrange.py [--sizes 64 32 24 16 12 8] [--segments 1.0 6.0 13.0] [--frames 24]
        [--canvas hd|4k] [--blur SIGMA] [--noise STD] [--jpeg QUALITY] [--min-face-px PX|size] [--impostors N]
        [--set key=value ...] [--long-set key=value ...] [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.longrange_report import print_table, save_plots
from bench.longrange_synth import Placement, read_impostors, read_segments, write_clip
from bench.machine import describe  # noqa: E402
from core.types import Detections
from facemoe.evaluate.video import GroundTruthSpan, ScoredTrack, evaluate_tracks, read_ground_truth
from pipeline.build import System, build
from pipeline.config import load_config
from pipeline.runners.eval_video import median_centre
from pipeline.runners.runner import FileRunner
from pipeline.runners.sources import FileSource
from pipeline.sinks.outputs import CollectSink
from stages.detect import FaceDetector
from stages.track import iou_matrix

ASSETS = ROOT.parent / "shared" / "assets"
CLIP = "friends_in_video.mp4"
OUTSIDE = "outside the clip"
GROUND_TRUTH = ROOT / "tests" / "facemoe" / "evaluate" / "data" / "friends_in_video_gt.csv"
CANVAS = {"hd": (1920, 1080), "4k": (3840, 2160)}
SIZES = (64, 32, 24, 16, 12, 8)
SEGMENTS = (1.0, 6.0, 13.0)  # seconds: Rachel and Joey, Monica and Chandler, Phoebe and Ross
MATCH_IOU = 0.3
BASELINE = ["detect.tiling=off", "detect.full_every=1", "detect.min_face_px=12"]
FPIR = 0.01


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
) -> tuple[dict, list[Detections]]:
    """One pipeline run over a size's files: recall, rank-1, TPIR at FPIR 1%, frames/s; and every frame's
    detections."""
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
        original = p.to_original(*centre) if centre else None
        h, w = p.segment.frames[0].shape[:2]
        inside = original is not None and 0 <= original[0] < w and 0 <= original[1] < h
        tracks.append(  # a track outside the shrunk clip (an impostor, the background) overlaps nobody
            ScoredTrack(
                CLIP if inside else OUTSIDE,
                template.track_id,
                p.segment.start_s + template.first_timestamp,
                p.segment.start_s + template.last_timestamp,
                scores,
                original,
            )
        )
    result = evaluate_tracks(tracks, spans, names, ranks=(1,), fpir_targets=(FPIR,))
    non_mated = result.counts["non_mated_tracks"]
    tpir = result.metrics.get("tpir@fpir=1e-2") if non_mated * FPIR >= 1 else None
    return {
        "faces": faces,
        "recall": hits / faces if faces else None,
        "detections": sum(len(d) for d in recorder.found),
        "false_detections": extra,
        "tracks": len(tracks),
        "mated_tracks": result.counts["mated_tracks"],
        "non_mated_tracks": non_mated,
        "rank1": result.metrics["rank-1"],
        "tpir_at_fpir_1pct": tpir,
        "frames": stats.frames,
        "seconds": stats.seconds["total"],
        "fps": stats.frames / max(stats.seconds["total"], 1e-9),
    }, recorder.found


def recall_against(reference: list[Detections], found: list[Detections]) -> float | None:
    """The share of ``reference``'s faces that ``found`` has too, frame by frame (one-to-one, IoU >= 0.3)."""
    total = sum(len(d) for d in reference)
    hits = sum(matched(r.xyxy, f.xyxy) for r, f in zip(reference, found, strict=True))
    return hits / total if total else None


def gallery_names(system: System) -> list[str]:
    embedder = system.embedder.embedder_id
    return sorted(i.name for i in system.gallery.identities() if embedder in i.embedders)


def bench(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    gallery = ASSETS / "images" / "friends_gallery"
    clip = ASSETS / "videos" / CLIP
    spans = [s for s in read_ground_truth(GROUND_TRUTH) if s.video == CLIP]
    base_cfg = load_config(args.config, [*args.overrides, *BASELINE])
    with av.open(str(clip)) as container:
        fps = container.streams.video[0].average_rate
    rows: dict[float, dict] = {s: {"size": s} for s in args.sizes}
    found: dict[tuple[str, float], list[Detections]] = {}
    with tempfile.TemporaryDirectory(prefix="longrange-") as tmp:
        with build(base_cfg, gallery_dir=gallery) as system:
            segments = read_segments(clip, args.segments, args.frames, system.detector)
            pool = read_impostors(gallery.parent, system.detector, gallery.name) if args.impostors else []
            if len(pool) < args.impostors:
                raise ValueError(
                    f"--impostors {args.impostors}: only {len(pool)} labelled photos to draw from"
                )
            placements: dict[float, list[Placement]] = {}
            for size in args.sizes:
                placements[size] = []
                for k, seg in enumerate(segments):
                    rng = np.random.default_rng([args.seed, round(size * 100), k])
                    drawn = [pool[i] for i in rng.choice(len(pool), args.impostors, replace=False)]
                    path = Path(tmp) / f"size{size:g}_seg{k}.mp4"
                    placements[size].append(
                        write_clip(path, seg, size, CANVAS[args.canvas], rng, args, fps, drawn)
                    )
            names = gallery_names(system)
        long_range = [*long_range_overrides(args.min_face_px), *args.long_overrides]
        settings = {
            "baseline": BASELINE,
            "long_range": long_range,
            "exhaustive": [*long_range, "detect.full_every=1"],
        }
        for setting, overrides in settings.items():
            for min_face_px, sizes in _by_min_face(args).items():
                sets = [*args.overrides, *(o.replace("<size>", min_face_px) for o in overrides)]
                cfg = load_config(args.config, sets)
                with build(cfg, gallery_dir=gallery) as system:
                    for size in sizes:
                        row, found[setting, size] = run_setting(system, cfg, placements[size], spans, names)
                        rows[size][setting] = row
    for size in args.sizes:
        rows[size]["long_range"]["recall_vs_exhaustive"] = recall_against(
            found["exhaustive", size], found["long_range", size]
        )
    return {
        "clip": CLIP,
        "canvas": list(CANVAS[args.canvas]),
        "segments": [
            {"start_s": round(s.start_s, 3), "frames": len(s.frames), "face_px": round(s.face_px, 1)}
            for s in segments
        ],
        "degradation": {"blur": args.blur, "noise": args.noise, "jpeg": args.jpeg},
        "impostors_per_clip": args.impostors,
        "overrides": {"all": list(args.overrides), **settings},
        "sizes": [rows[s] for s in args.sizes],
        "runtime_s": round(time.perf_counter() - started, 1),
    }


def long_range_overrides(min_face_px: str | None) -> list[str]:
    """The long-range setting: the config as it is, but for ``--min-face-px``."""
    if min_face_px is None:
        return []
    return [f"detect.min_face_px={'<size>' if min_face_px == 'size' else min_face_px}"]


def _by_min_face(args: argparse.Namespace) -> dict[str, list[float]]:
    """The sizes grouped by the min_face_px they run with (one build each; one group unless ``size``)."""
    if args.min_face_px != "size":
        return {"": list(args.sizes)}
    return {f"{size:g}": [size] for size in args.sizes}


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
    parser.add_argument(
        "--min-face-px", type=min_face_arg, help="long range: px or 'size' (default: the config's)"
    )
    parser.add_argument(
        "--impostors",
        type=int,
        default=0,
        choices=range(0, 61),
        metavar="0..60",
        help="faces of people outside the gallery pasted still in each clip (non-mated probes for TPIR@FPIR)",
    )
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
    print(describe(), flush=True)  # what the figures below were measured on
    if not 0 <= args.blur <= 20 or not 0 <= args.noise <= 64 or len(args.segments) > 10:
        parser.error("expected --blur within [0, 20], --noise within [0, 64] and at most 10 segments")
    logging.basicConfig(level=logging.WARNING)
    if not (ASSETS / "videos" / CLIP).is_file():
        print(f"shared assets not found at {ASSETS}", file=sys.stderr)
        return 2
    try:
        out = bench(args)
    except (
        ValueError
    ) as exc:  # segments past the clip's end, a frame too large for the canvas, too few impostors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.plots:
        for path in save_plots(out, args.plots):
            print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
