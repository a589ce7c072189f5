"""How the detector uses the cores: one onnxruntime run on one or two intra-op threads against two runs side by
side (one session, one or two threads each), per input size, interleaved round by round. This is what
``detect.workers`` rests on (stages/detect_runs.py).

Reported per input size: milliseconds per image of each layout (median over rounds) and megapixels per second;
the ratios of two threads in one run and of two one-thread runs side by side to one thread.

    python bench/detect_threads.py [--model PATH] [--rounds 5] [--sizes 672x736 640x384 256x256 128x128]
        [--pixels 2e7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from stages.errors import ModelError
from stages.onnx_session import onnx_session

MODEL = ROOT.parent / "shared" / "assets" / "models" / "scrfd_500m_bnkps.onnx"
LAYOUTS = ("1 thread", "2 threads", "2 runs x 1 thread", "2 runs x 2 threads")


def size_arg(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def per_image(session, feed: dict, runs: int, images: int) -> float:
    """Seconds per image of ``images`` runs spread over ``runs`` threads side by side."""
    with ThreadPoolExecutor(runs) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: session.run(None, feed), range(images)))
        return (time.perf_counter() - start) / images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--sizes", nargs="+", type=size_arg, default=[(672, 736), (640, 384), (256, 256), (128, 128)]
    )
    ap.add_argument(
        "--pixels", type=float, default=2e7, help="input pixels per layout and round (at least 4 runs)"
    )
    args = ap.parse_args(argv)
    print(describe(), flush=True)
    try:
        sessions = {n: onnx_session(args.model, n, "cpu", "detector") for n in (1, 2)}
    except ModelError as exc:
        print(f"detect_threads: {exc}", file=sys.stderr)
        return 2
    setups = {
        "1 thread": (sessions[1], 1),
        "2 threads": (sessions[2], 1),
        "2 runs x 1 thread": (sessions[1], 2),
        "2 runs x 2 threads": (sessions[2], 2),
    }
    name = sessions[1].get_inputs()[0].name
    print(f"model {args.model.name}, {args.rounds} rounds, ms per image (median), Mpx/s in brackets")
    print("| input | " + " | ".join(LAYOUTS) + " | 2 threads / 1 | 2 runs x 1 thread / 1 |")
    print("|---" * (len(LAYOUTS) + 3) + "|")
    for w, h in args.sizes:
        feed = {name: np.random.default_rng(0).random((1, 3, h, w), np.float32)}
        images = max(4, int(args.pixels / (w * h)))
        for session, _ in setups.values():
            session.run(None, feed)
        times = {k: [] for k in setups}
        for r in range(args.rounds):
            order = list(setups) if r % 2 == 0 else list(setups)[::-1]
            for k in order:
                session, runs = setups[k]
                times[k].append(per_image(session, feed, runs, images))
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        cells = " | ".join(f"{ms[k]:.2f} ({w * h / ms[k] / 1e3:.1f})" for k in LAYOUTS)
        one = ms["1 thread"]
        print(f"| {w}x{h} | {cells} | {one / ms['2 threads']:.2f}x | {one / ms['2 runs x 1 thread']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
