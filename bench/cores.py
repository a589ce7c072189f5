"""Detection and a CPU FaceMoE sharing the cores: the friends clip end to end per thread split, interleaved.

A paper-size FaceMoE checkpoint (official format, seeded random weights, written to a temporary folder) embeds the
friends clip's tracks (configs/test.yaml, SCRFD-500M) at the default precision. Each round runs every variant
once, in turn, so that a machine whose load drifts affects them alike; the figures are each variant's frames/s
per round and its ratio to the first variant (torch's own thread count) in the same round:

- ``torch``: ``runner.share_cores=false``, torch's own thread count (every core) while detection runs beside it;
- ``shared``: the core budget (``runner.share_cores``): every core while detection idles, one fewer while it runs;
- ``one``: ``runner.cores=1``, one torch thread throughout (a static split);
- ``torch-det1``: torch's own thread count, detection on one onnxruntime thread (``detect.threads=1``);
- ``shared-det1``: the budget, and detection on one onnxruntime thread.

    python bench/cores.py [--end 0] [--rounds 2] [--variants torch shared ...] [--set key=value ...]
    python bench/cores.py --overlap [--calls 4] [--rounds 3] [--variants ...]

``--overlap``: only the time both sides work, the case the split decides: detection loops on four frames of the
clip (holding the budget) while the embedding thread embeds ``--calls`` batches of two crops; per variant, the
embedding's and the detection's speed as ratios to the first variant's in the same round, and the process's CPU
seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from pipeline.build import build  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.runners.runner import FileRunner  # noqa: E402
from pipeline.runners.sources import FileSource  # noqa: E402
from pipeline.sinks.outputs import CollectSink  # noqa: E402

CLIP = ROOT.parent / "shared" / "assets" / "videos" / "friends_in_video.mp4"
VARIANTS = {
    "torch": ["runner.share_cores=false"],
    "shared": ["runner.share_cores=true"],
    "one": ["runner.share_cores=true", "runner.cores=1"],
    "torch-det1": ["runner.share_cores=false", "detect.threads=1"],
    "shared-det1": ["runner.share_cores=true", "detect.threads=1"],
}


def run_variant(cfg, system) -> dict:
    """One run of the clip: frames/s, and seconds in detection and embedding."""
    runner = FileRunner(cfg, system.detector, system.embedder, system.matcher(), [CollectSink()])
    start = time.perf_counter()
    stats = runner.run([FileSource(CLIP, cfg.source)])
    seconds = time.perf_counter() - start
    return {
        "frames": stats.frames,
        "seconds": seconds,
        "fps": stats.frames / seconds,
        "detect_s": stats.seconds.get("detect", 0.0),
        "embed_s": stats.seconds.get("embed", 0.0),
        "crops": stats.crops_embedded,
    }


def overlap(cfg, system, calls: int) -> dict:
    """Embedding ``calls`` batches of two crops in a thread while this thread detects: both sides' speeds."""
    import threading

    import numpy as np

    from stages.cores import budget_of, detecting

    frames = [f.image for f in FileSource(CLIP, cfg.source.model_copy(update={"start": 0.0, "end": 0.5}))][:4]
    crops = [np.random.default_rng(0).integers(0, 256, (112, 112, 3), np.uint8) for _ in range(2)]
    system.embedder.embed(crops)
    system.detector.detect(frames)
    budget, done, embed_s = budget_of(system.embedder), threading.Event(), []

    def embed() -> None:
        start = time.perf_counter()
        for _ in range(calls):
            system.embedder.embed(crops)
        embed_s.append(time.perf_counter() - start)
        done.set()

    cpu, start, detected = time.process_time(), time.perf_counter(), 0
    worker = threading.Thread(target=embed)
    worker.start()
    while not done.is_set():
        with detecting(budget):
            system.detector.detect(frames)
        detected += len(frames)
    worker.join()
    seconds = time.perf_counter() - start
    return {"embed_s": embed_s[0], "detect_fps": detected / seconds, "cpu_s": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--end", type=float, default=0.0, help="last second of the clip; 0 = all of it")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["torch", "shared", "one"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--overlap", action="store_true", help="only the time both sides work (docstring)")
    parser.add_argument("--calls", type=int, default=4, help="--overlap: embedding calls of two crops")
    args = parser.parse_args()
    print(describe(), flush=True)  # what the figures below were measured on

    import torch

    from facemoe.checkpoint import save_checkpoint
    from facemoe.model import create_facemoe

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.pt"
        torch.manual_seed(0)
        save_checkpoint(create_facemoe(), checkpoint)
        base = ["embed.backend=facemoe", f"embed.checkpoint={checkpoint}", *args.overrides]
        if args.end:
            base.append(f"source.end={args.end}")
        configs = {
            n: load_config(ROOT / "configs" / "test.yaml", [*base, *VARIANTS[n]]) for n in args.variants
        }
        with contextlib.ExitStack() as stack:  # built once: the rounds time the runs only
            systems = {n: stack.enter_context(build(cfg)) for n, cfg in configs.items()}
            (_overlap_rounds if args.overlap else _rounds)(args, configs, systems, rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _overlap_rounds(args, configs: dict, systems: dict, rows: list[dict]) -> None:
    for round_ in range(args.rounds):
        first = None
        for name in args.variants:
            row = {"round": round_, "variant": name, **overlap(configs[name], systems[name], args.calls)}
            first = first or row
            row["embed_ratio"] = first["embed_s"] / row["embed_s"]
            row["detect_ratio"] = row["detect_fps"] / first["detect_fps"]
            rows.append(row)
            print(
                f"round {round_} {name:12s} embedding {args.calls} calls {row['embed_s']:6.2f} s "
                f"(speed x{row['embed_ratio']:.2f} of {first['variant']}), detection {row['detect_fps']:5.1f} "
                f"frames/s (x{row['detect_ratio']:.2f}), CPU {row['cpu_s']:5.1f} s",
                flush=True,
            )


def _rounds(args, configs: dict, systems: dict, rows: list[dict]) -> None:
    for round_ in range(args.rounds):
        first = None
        for name in args.variants:
            row = {"round": round_, "variant": name, **run_variant(configs[name], systems[name])}
            first = first or row
            row["ratio"] = row["fps"] / first["fps"]
            rows.append(row)
            print(
                f"round {round_} {name:12s} {row['frames']} frames {row['seconds']:6.1f} s "
                f"{row['fps']:5.2f} frames/s  x{row['ratio']:.2f} of {first['variant']}  "
                f"detect {row['detect_s']:5.1f} s embed {row['embed_s']:5.1f} s ({row['crops']} crops)",
                flush=True,
            )


if __name__ == "__main__":
    main()
