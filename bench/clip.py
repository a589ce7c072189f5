"""Cost of cutting a track's clip (pipeline/services/clips.py): decode a window of a video, draw a box on every
frame, encode H.264 (libx264, preset veryfast, CRF 23) into an MP4 with +faststart. Prints the processor line
(bench/machine.py), then per run the window, frames, wall seconds, frames per second and the ratio of clip time to
wall time.

    python bench/clip.py                                          # the friends clip, 10 s windows, 3 runs
    python bench/clip.py --video ../shared/assets/videos/facenet_pytorch_video.mp4 --seconds 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
from pipeline.services.clips import ClipPart, cut_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "assets" / "videos" / "friends_in_video.mp4"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", type=Path, default=VIDEO, help="the video to cut (default: the friends clip)")
    p.add_argument("--start", type=float, default=4.0, help="window start (s)")
    p.add_argument("--seconds", type=float, default=10.0, help="window length (s)")
    p.add_argument("--runs", type=int, default=3, help="repetitions")
    args = p.parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    end = args.start + args.seconds
    boxes = np.array([[args.start, 100, 100, 220, 260], [end, 140, 100, 260, 260]], np.float32)
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            t0 = time.perf_counter()
            clip = cut_clip([ClipPart(args.video)], args.start, end, Path(folder) / f"c{run}.mp4", boxes)
            wall = time.perf_counter() - t0
            span = clip.end - clip.start
            print(
                f"run {run + 1}: {args.video.name} {clip.start:.2f}-{clip.end:.2f} s, {clip.width}x{clip.height}, "
                f"{clip.frames} frames in {wall:.2f} s = {clip.frames / wall:.1f} frames/s, "
                f"{span / wall:.2f}x real time, {clip.path.stat().st_size / 1e6:.2f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
