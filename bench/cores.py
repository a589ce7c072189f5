"""Detection and a CPU FaceMoE sharing the cores: the friends clip end to end per thread split, interleaved.

A paper-size FaceMoE checkpoint (official format, seeded random weights, written to a temporary folder) embeds the
friends clip's tracks (configs/test.yaml, SCRFD-500M) at the default precision. Each round runs every variant
once, in turn, so that a machine whose load drifts affects them alike; the figures are each variant's frames/s
per round and its ratio to the first variant (torch's own thread count) in the same round:

- ``torch``: ``runner.share_cores=false``, torch's own thread count (every core) while detection runs beside it;
- ``shared``: the core budget (``runner.share_cores``): every core while detection idles, one fewer while it runs;
- ``one``: ``runner.cores=1``, one torch thread throughout (a static split);
- ``shared-det1``: the budget, and detection on one onnxruntime thread (``detect.threads=1``).

    python bench/cores.py [--end 0] [--rounds 2] [--variants torch shared one shared-det1] [--set key=value ...]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--end", type=float, default=0.0, help="last second of the clip; 0 = all of it")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["torch", "shared", "one"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the figures here")
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
            _rounds(args, configs, systems, rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


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
