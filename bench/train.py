"""Training throughput and memory of FaceMoE fine-tuning on this machine.

For each variant (small test model, paper model) and two batch sizes, a fresh process runs full-phase
training steps (forward with aux loss, CosFace head, backward, clipping, AdamW) on synthetic 120x120
inputs and, as the baseline measured in the same process, eval-mode inference of the same batch.
Reported: training images/s, inference images/s, their ratio, peak resident memory, and memory per
image (slope of peak memory between the two batch sizes).

    python bench/train.py                      # small and paper
    python bench/train.py --variants small --steps 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "small": (
        {"embed_dim": 32, "depths": [2, 2, 2], "num_heads": [2, 4, 4], "num_experts": 3, "k": 2},
        (8, 16),
    ),
    "paper": ({}, (2, 4)),
}
NUM_CLASSES = 1000


def _worker(variant: str, batch: int, steps: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from facemoe.model import create_facemoe
    from facemoe.train.head import CosFaceHead
    from facemoe.train.module import TrainModule

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone = create_facemoe(**VARIANTS[variant][0])
    module = TrainModule(backbone, CosFaceHead(512, NUM_CLASSES, sample_rate=1.0), "full", None)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, weight_decay=0.1)
    x = torch.rand(batch, 3, 120, 120) * 2 - 1
    y = torch.randint(0, NUM_CLASSES, (batch,))
    train_times = []
    module.train()
    for _ in range(steps + 1):  # the first step (allocating optimizer state) is not timed
        t = time.perf_counter()
        id_loss, aux = module(x, y)
        (id_loss + 10.0 * aux).backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_times.append(time.perf_counter() - t)
    backbone.eval()
    infer_times = []
    with torch.inference_mode():
        for _ in range(steps + 1):
            t = time.perf_counter()
            backbone(x)
            infer_times.append(time.perf_counter() - t)
    return {
        "variant": variant,
        "batch": batch,
        "params": sum(p.numel() for p in backbone.parameters()),
        "train_images_per_s": batch / statistics.median(train_times[1:]),
        "infer_images_per_s": batch / statistics.median(infer_times[1:]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run(variant: str, batch: int, steps: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        str(batch),
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="small,paper", help="comma-separated: small, paper")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]), args.steps, args.threads)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the parent says what it runs on
    from bench.machine import describe

    print(describe(), flush=True)
    rows = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}, expected one of {', '.join(VARIANTS)}")
        small_b, large_b = VARIANTS[variant][1]
        a, b = (
            _run(variant, small_b, args.steps, args.threads),
            _run(variant, large_b, args.steps, args.threads),
        )
        per_image = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (large_b - small_b)
        for r in (a, b):
            r["mib_per_image"] = per_image
            r["train_vs_infer"] = r["train_images_per_s"] / r["infer_images_per_s"]
            rows.append(r)
    head = (
        f"{'variant':<8}{'params':>13}{'batch':>7}{'train img/s':>13}{'infer img/s':>13}{'train/infer':>13}"
        f"{'peak MiB':>10}{'MiB/img':>9}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['variant']:<8}{r['params']:>13,}{r['batch']:>7}{r['train_images_per_s']:>13.2f}"
            f"{r['infer_images_per_s']:>13.2f}{r['train_vs_infer']:>13.3f}{r['peak_rss_mib']:>10.0f}"
            f"{r['mib_per_image']:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
