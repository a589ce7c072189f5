"""Detection of several 1080p cameras: one detector call per frame (what the live runner does when a detection
schedule plans each frame from the one before, ``detect.full_every`` > 1) against one call per round of frames, one
frame of each camera (``detect.batch_size`` frames at most), on the same frames, interleaved round by round.

The cameras are the live bench's 1080p mix (bench/live_media.py: three CCTV lobby, one crowd; the clips prepared once
into ``--cache``), each decoded from its file with a different start; both ways track with their own per-camera
``SourceTracking`` (configs/test.yaml), so each plans its frames from its own tracks. Reported: detector seconds per
round each way, their ratio (median of per-block ratios and the total), and whether both found the same faces.

    python bench/live_batching.py [--cameras 4] [--rounds 100] [--cache DIR] [--clip-seconds S] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import av  # noqa: E402

from bench.live_media import camera_clips, prepare_clip  # noqa: E402
from bench.machine import describe  # noqa: E402
from core.types import Frame
from pipeline.build import build
from pipeline.config import load_config
from pipeline.runners.tracking import RunStats, SourceTracking, TrackJob, detect

ASSETS = ROOT.parent / "shared" / "assets"


def camera_frames(clip: Path, name: str, skip: int):
    """The clip's frames looped, as ``Frame``s of camera ``name`` at 25 fps, from its ``skip``-th frame."""
    index = 0
    while True:
        with av.open(str(clip)) as c:
            for f in c.decode(video=0):
                if skip:
                    skip -= 1
                    continue
                yield Frame(name, index, index / 25.0, f.to_ndarray(format="bgr24"), None)
                index += 1


def per_frame(detector, frames, state, stats, job) -> list:
    """Today's scheduled path: each frame planned and detected alone."""
    out = []
    for f in frames:
        out += detect(detector, [f], stats, [state[f.source_id].plan(f)])
        state[f.source_id].frame(f, out[-1], job, stats)
    return out


def per_round(detector, frames, state, stats, job, size: int) -> list:
    """One frame of each camera per call (frames of different cameras only)."""
    out = []
    for start in range(0, len(frames), size):
        group = frames[start : start + size]
        dets = detect(detector, group, stats, [state[f.source_id].plan(f) for f in group])
        for f, d in zip(group, dets):
            state[f.source_id].frame(f, d, job, stats)
        out += dets
    return out


def whole_frames(letterboxed, frames: list[Frame], repeats: int) -> tuple[float, float]:
    """Median seconds to detect ``frames`` letterboxed (no native windows): one call per frame, one call for all
    (the detector batches them by ``detect.batch_size``), interleaved."""
    images = [f.image for f in frames]
    one, batched = [], []
    for r in range(repeats):
        for way in ("one", "batched") if r % 2 == 0 else ("batched", "one"):
            t0 = time.perf_counter()
            if way == "one":
                for img in images:
                    letterboxed([img])
            else:
                letterboxed(images)
            (one if way == "one" else batched).append(time.perf_counter() - t0)
    return statistics.median(one), statistics.median(batched)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=100, help="rounds of one frame per camera")
    ap.add_argument("--block", type=int, default=12, help="rounds per timed block (ratios are per block)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facemoe-bench-live")
    ap.add_argument("--clip-seconds", type=float, help="only the clips' first seconds (quick runs)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = ap.parse_args(argv)
    print(describe(), flush=True)
    cfg = load_config(ROOT / "configs" / "test.yaml", args.set)
    names = camera_clips(args.cameras, "1080p")
    clips = {
        n: prepare_clip(ASSETS / "videos", n, "1080p", args.cache, args.clip_seconds) for n in set(names)
    }
    sources = [camera_frames(clips[n], f"cam{i}", 37 * i) for i, n in enumerate(names)]
    size = cfg.detect.batch_size
    with build(cfg, embedder=False, gallery=False) as system:
        det = system.detector
        ways = {
            "per frame": (lambda fr, st, s, j: per_frame(det, fr, st, s, j)),
            "per round": (lambda fr, st, s, j: per_round(det, fr, st, s, j, size)),
        }
        states = {w: {f"cam{i}": SourceTracking(cfg, f"cam{i}") for i in range(len(names))} for w in ways}
        seconds = {w: [] for w in ways}
        same = total = 0
        for block in range(0, args.rounds, args.block):
            spent = dict.fromkeys(ways, 0.0)
            for r in range(block, min(block + args.block, args.rounds)):
                frames = [next(s) for s in sources]
                order = list(ways) if r % 2 == 0 else list(ways)[::-1]
                found = {}
                for w in order:
                    stats = RunStats()
                    found[w] = ways[w](frames, states[w], stats, TrackJob())
                    spent[w] += stats.seconds["detect"]
                counts = [[len(d) for d in found[w]] for w in ways]
                same += counts[0] == counts[1]
                total += 1
            for w in ways:
                seconds[w].append(spent[w])
        letterboxed = whole_frames(det.letterboxed, [next(s) for s in sources], args.rounds)
    a, b = (seconds[w] for w in ways)
    rounds = args.rounds
    print(f"{len(names)} cameras at 1080p ({', '.join(names)}), detect.batch_size {size}, {rounds} rounds")
    print(
        "| way | detector s / round | vs per frame |\n|---|---|---|\n"
        f"| per frame | {sum(a) / rounds:.4f} | 1.00x |\n"
        f"| per round | {sum(b) / rounds:.4f} | {sum(a) / max(sum(b), 1e-9):.2f}x |"
    )
    ratio = statistics.median(x / max(y, 1e-9) for x, y in zip(a, b))
    print(f"per-block median speed-up {ratio:.2f}x; same face counts in {same} of {total} rounds")
    one, batched = letterboxed
    print(
        f"letterboxed whole frames only ({len(names)} frames, canvas {det.input_size[0]} wide): "
        f"{1000 * one:.1f} ms one at a time, {1000 * batched:.1f} ms in one call ({one / batched:.2f}x; medians)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
