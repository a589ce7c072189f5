"""Embedding throughput of FaceMoE on the CPU against the original's forward, int8, bf16 and ONNX Runtime.

One run, one set of weights (seeded random, or ``--checkpoint``), the same inputs for every engine.
``reference`` is the official ``backbones/swin_moe.py`` eval forward op for op (``bench/embed_reference.py``:
the router's softmax, losses and dispatch mask on every call, the sorted dispatch with ``nonzero``/``unique``
and ``out[rows] +=`` per expert, explicit attention scores, roll / window partition / reverse, the whole batch
per stage) over the model's own weight tensors; its speed was checked against the original file
(docs/bench_embed.md). ``model`` is the project's model as ``FaceMoEEmbedder`` runs it in fp32 on the CPU
(linear layers pre-packed for oneDNN, ``facemoe.packed``); ``nn.Linear`` the same model unpacked, to show what
packing adds; ``bf16`` (CPUs with AVX512-BF16 or AMX) the model packed in bf16 (``precision: bf16`` on the CPU).
Runs of the engines are interleaved round by round (each round starting with the next engine) so that load
from other processes hits them alike; the table reports the fastest round (min) and the median.
Per batch, the reduced-precision engines (int8, int8 with an fp32-kept layer set, bf16) are compared with the
fp32 model on the warm-up input: cosine of the outputs, and routing agreement (share of MoE tokens whose top-k
expert set is fp32's, overall and in the lowest layer). After the table, the templates check
(``bench/embed_agree.py``): crops embedded with their flips and fused into templates as the pipeline does,
cosine to fp32 per crop and per template against the bar (0.999).
With ``--checkpoint`` (or ``--int8-report``) the int8 diagnostics of ``bench/embed_int8.py`` come first, and
their suggested kept set is the ``int8 kept`` engine (or name one with ``--int8-keep``). Usage::

    python bench/embed.py                       # paper variant, batches 1, 8, 32
    python bench/embed.py --small --batches 1,8 # quick run on the small fixture-sized model
    python bench/embed.py --checkpoint briar --images DIR  # the released weights (local path or Hub cache)
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.embed_agree import OVERALL, record_routing, routing_agreement, template_cosines  # noqa: E402
from bench.embed_int8 import int8_report  # noqa: E402
from bench.embed_reference import reference_copy  # noqa: E402
from bench.machine import describe  # noqa: E402
from facemoe.model import create_facemoe  # noqa: E402
from facemoe.packed import native_bf16, pack_for_cpu  # noqa: E402
from facemoe.quantize import quantize_int8  # noqa: E402

SMALL = dict(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 4))
LOW = ("int8", "int8 kept", "bf16")  # the engines compared with the fp32 model
BAR = 0.999  # the cosine to fp32 that templates must hold


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules that shares its weight tensors."""
    return copy.deepcopy(model, memo={id(t): t for t in [*model.parameters(), *model.buffers()]})


def matmul_gflops(dim: int, repeats: int, packed: bool = False) -> float:
    """Best fp32 GEMM rate over the model's dominant expert shape ``[M, C] x [C, 4C]`` and a square one:
    ``torch.matmul``, or with ``packed`` oneDNN's GEMM on a pre-packed weight (what the packed model calls)."""
    best = 0.0
    for m, k, n in ((4096, 2 * dim, 8 * dim), (2048, 2048, 2048)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        if packed:
            w = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), None)
            fn = functools.partial(torch.ops.mkldnn._linear_pointwise, a, w, None, "none", [], "")
        else:
            fn = functools.partial(torch.matmul, a, b)
        fn()
        seconds = min(_timed(fn) for _ in range(repeats * 3))
        best = max(best, 2 * m * k * n / seconds / 1e9)
    return best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far; (0, 0) without /proc."""
    try:
        busy = sum(
            int(v) for i, v in enumerate(Path("/proc/stat").read_text().split()[1:9]) if i not in (3, 4)
        )
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0, 0.0
    own = os.times()
    return busy / tick, own.user + own.system


def _foreign_share(fn) -> tuple[float, float]:
    """(seconds of ``fn()``, share of the machine's CPUs other processes used meanwhile)."""
    busy, own = _cpu_seconds()
    seconds = _timed(fn)
    busy2, own2 = _cpu_seconds()
    return seconds, max(0.0, (busy2 - busy) - (own2 - own)) / (seconds * (os.cpu_count() or 1))


def load_inputs(images: Path | None, batch: int, size: int, seed: int, first: int = 0) -> torch.Tensor:
    """``[batch, 3, size, size]`` in [-1, 1]: aligned face crops from a folder (cycled from the ``first``-th),
    else seeded noise."""
    if images is None:
        return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    import cv2

    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        raise SystemExit(f"error: no .jpg/.png images in {images}")
    crops = [
        cv2.resize(
            cv2.imread(str(files[(first + i) % len(files)]))[:, :, ::-1],
            (size, size),
            interpolation=cv2.INTER_CUBIC,
        )
        for i in range(batch)
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--small", action="store_true", help="fixture-sized model instead of the paper variant"
    )
    parser.add_argument(
        "--checkpoint",
        help="an official model.pt (path, or release name briar / tinyface through "
        "the Hugging Face cache) instead of seeded random weights",
    )
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per batch size")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=Path, help="folder of aligned face crops (default: uniform noise)")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip bf16 (also skipped without AVX512-BF16/AMX)"
    )
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument(
        "--int8-report",
        action="store_true",
        help="int8 routing agreement, per-group sensitivity and a kept set (default with --checkpoint)",
    )
    parser.add_argument("--int8-probe", type=int, default=8, help="inputs of the int8 report")
    parser.add_argument("--int8-target", type=float, default=0.999, help="cosine the kept set aims at")
    parser.add_argument("--int8-max-keep", type=int, default=8, help="most groups the kept set may hold")
    parser.add_argument(
        "--int8-keep",
        help="comma-separated modules int8 keeps in fp32 (embed.int8_fp32_layers) for the 'int8 kept' engine; "
        "default: the set the int8 report suggests",
    )
    parser.add_argument(
        "--template-crops", type=int, default=8, help="crops of the templates check (0: no check)"
    )
    parser.add_argument("--crops-per-template", type=int, default=4, help="crops fused into one template")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.checkpoint:
        from facemoe.checkpoint import load_model
        from facemoe.errors import CheckpointError

        try:
            unpacked = load_model(args.checkpoint)
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        variant = f"checkpoint {args.checkpoint}"
    else:
        unpacked = create_facemoe(**(SMALL if args.small else {})).eval()
        variant = f"{'small' if args.small else 'facemoe_swin_e3k2 (paper)'}, seed {args.seed}"
    reference = reference_copy(unpacked)
    model = pack_for_cpu(shared_copy(unpacked))
    size = unpacked.cfg.img_size
    probe = load_inputs(args.images, 2, size, args.seed)
    with torch.inference_mode():
        expected = reference(probe)
        gaps = {
            name: float((m(probe) - expected).abs().max())
            for name, m in (("model", model), ("nn.Linear", unpacked))
        }
        with FlopCounterMode(display=False) as counter:
            unpacked(probe[:1])
    gflop = counter.get_total_flops() / 1e9
    inputs = args.images or "uniform noise in [-1, 1]"
    print(f"variant: {variant}, threads {args.threads}, {gflop:.1f} GFLOP/image, inputs: {inputs}")
    print(
        "max |diff| to the reference (must be <= 1e-4): " + ", ".join(f"{n} {g:.2e}" for n, g in gaps.items())
    )
    if max(gaps.values()) > 1e-4:
        return 1
    peak = matmul_gflops(unpacked.cfg.embed_dim * 2, args.repeats)
    onednn = matmul_gflops(unpacked.cfg.embed_dim * 2, args.repeats, packed=True)
    print(
        f"fp32 matmul throughput of this machine: {peak:.0f} GFLOP/s with torch.matmul (the table's 100%), "
        f"{onednn:.0f} GFLOP/s with oneDNN on a packed weight"
    )

    keep = [name for name in (args.int8_keep or "").split(",") if name]
    if not args.no_int8 and (args.checkpoint or args.int8_report):
        probe = load_inputs(args.images, args.int8_probe, size, args.seed + 999)
        suggested = int8_report(unpacked, model, probe, args.int8_target, args.int8_max_keep)
        keep = keep or suggested
    engines = {"model": model, "nn.Linear": unpacked, "reference": reference}
    if not args.no_int8:
        engines["int8"] = quantize_int8(unpacked)
        if keep:
            print(f"int8 kept: int8 with embed.int8_fp32_layers [{', '.join(keep)}] in fp32")
            engines["int8 kept"] = quantize_int8(unpacked, keep_fp32=keep)
    if not args.no_bf16 and native_bf16():
        engines["bf16"] = pack_for_cpu(shared_copy(unpacked), dtype=torch.bfloat16)
    if not args.no_onnx:
        from facemoe.export import INPUT_NAME, OUTPUT_NAME, check_onnx, export_onnx, onnx_session

        workdir = tempfile.TemporaryDirectory()
        start = time.perf_counter()
        session = onnx_session(
            export_onnx(unpacked, Path(workdir.name) / "facemoe.onnx"), threads=args.threads
        )
        print(
            f"onnx export + load {time.perf_counter() - start:.0f} s, "
            f"max |onnxruntime - torch| at batch 1,3: {check_onnx(unpacked, session, (1, 3)):.1e}"
        )
        engines["onnxruntime"] = lambda x: torch.from_numpy(
            session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        )

    rows = [
        time_batch(
            engines,
            [
                load_inputs(args.images, b, size, args.seed + b + 1000 * r, first=r * b)
                for r in range(args.repeats + 1)
            ],
        )
        for b in batches
    ]
    print_table(rows, peak, gflop)
    lows = {name: engines[name] for name in ("model", *LOW) if name in engines}
    if args.template_crops and len(lows) > 1:
        crops = load_inputs(args.images, args.template_crops, size, args.seed + 777)
        print_templates(
            template_cosines(lows, crops, args.crops_per_template), len(crops), args.crops_per_template
        )
    return 0


def time_batch(engines: dict, inputs: list[torch.Tensor]) -> dict:
    """A warm-up on ``inputs[0]`` (whose outputs give the cosines to ``model``), then one interleaved round of
    every engine on each further input (new crops every round, as in use: the experts' row counts change):
    best and median seconds per engine, and the most CPU other processes took during one engine's run."""
    x = inputs[0]
    times = {name: [] for name in engines}
    foreign = 0.0
    outputs, routes = {}, {}
    with torch.inference_mode():
        for name, engine in engines.items():  # warm-up
            if isinstance(engine, nn.Module) and name != "nn.Linear":
                with record_routing(engine) as routes[name]:
                    outputs[name] = engine(x)
            else:
                outputs[name] = engine(x)
        names = list(engines)
        for round_, x in enumerate(inputs[1:]):  # the starting engine rotates from round to round
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                seconds, share = _foreign_share(functools.partial(engines[name], x))
                times[name].append(seconds)
                foreign = max(foreign, share)
    best = {name: min(t) for name, t in times.items()}
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"batch {len(x)}: "
        + ", ".join(f"{n} min {best[n]:.3f}s median {med[n]:.3f}s" for n in engines)
        + f"; other processes took up to {100 * foreign:.0f}% of the CPUs during a run",
        flush=True,
    )
    cosines, routing = {}, {}
    for low in LOW:
        if low in outputs:
            cosine = F.cosine_similarity(outputs[low], outputs["model"])
            cosines[low] = (float(cosine.mean()), float(cosine.min()))
            shares = routing_agreement(routes["model"], routes[low])
            overall = shares.pop(OVERALL)
            routing[low] = (overall, min(shares.values(), default=1.0))
    return dict(batch=len(x), best=best, med=med, cosines=cosines, routing=routing)


def _ratio(best: dict, med: dict, name: str) -> str:
    return f"{best['reference'] / best[name]:.2f} ({med['reference'] / med[name]:.2f})"


def print_table(rows: list[dict], peak: float, gflop: float) -> None:
    """crops/s from the best round; ratios to the reference from the best rounds (and from the medians)."""
    names = list(rows[0]["best"])
    lows = [n for n in LOW if n in names]
    head = ["batch", "model crops/s", "nn.Linear crops/s", "reference crops/s", "model / ref (median)"]
    head.append("GFLOP/s (% matmul)")
    for low in lows:
        head += [f"{low} crops/s", f"{low} / ref (median)", f"{low} cosine mean (min)"]
        head.append(f"{low} routing equal (lowest layer)")
    if "onnxruntime" in names:
        head += ["onnxruntime crops/s", "ort / torch"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        best, med, n = r["best"], r["med"], r["batch"]
        ratio = functools.partial(_ratio, best, med)

        gflops = gflop * n / best["model"]
        cells = [str(n), *(f"{n / best[e]:.2f}" for e in ("model", "nn.Linear", "reference")), ratio("model")]
        cells.append(f"{gflops:.0f} ({100 * gflops / peak:.0f}%)")
        for low in lows:
            mean, least = r["cosines"][low]
            cells += [f"{n / best[low]:.2f}", ratio(low), f"{mean:.4f} ({least:.4f})"]
            cells.append("{:.4f} ({:.4f})".format(*r["routing"][low]))
        if "onnxruntime" in names:
            cells += [f"{n / best['onnxruntime']:.2f}", f"{best['model'] / best['onnxruntime']:.2f}"]
        print("| " + " | ".join(cells) + " |")


def print_templates(result: dict, crops: int, per_template: int) -> None:
    """The templates check: per engine, cosine to fp32 of flip-fused crops and of templates, against the bar."""
    print(
        f"\ntemplates check: {crops} crops, each with its flip (fused), templates of {per_template} crops fused as "
        f"the pipeline does; cosine to the fp32 model, bar {BAR}"
    )
    print("| engine | crop cosine mean (min) | template cosine mean (min) | holds the bar |")
    print("|---|---|---|---|")
    for name, got in result.items():
        holds = "yes" if min(got["crop"][1], got["template"][1]) >= BAR else "no"
        crop, template = ("{:.5f} ({:.5f})".format(*got[k]) for k in ("crop", "template"))
        print(f"| {name} | {crop} | {template} | {holds} |")


if __name__ == "__main__":
    sys.exit(main())
