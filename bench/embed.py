"""Embedding throughput of FaceMoE on the CPU against a per-expert-loop reference, int8, bf16 and ONNX Runtime.

One run, one set of weights (seeded random, or ``--checkpoint``), the same inputs for every engine. The
reference is written here: the original's MoE loop (``torch.where`` per expert, ``out[rows] += expert(x[rows])
* gate``), its explicit attention softmax and its roll / window partition / window reverse in every block,
swapped into a copy of the model that shares the model's weight tensors. ``model`` is the project's model as
``FaceMoEEmbedder`` runs it in fp32 on the CPU (linear layers pre-packed for oneDNN, ``facemoe.packed``);
``nn.Linear`` is the same model unpacked, to show what packing adds; ``bf16`` (CPUs with AVX512-BF16 or AMX)
the model packed in bf16 with an fp32 residual stream (``precision: bf16`` on the CPU). Runs of the engines
are interleaved round by round (each round starting with the next engine) so that load from other processes
hits them alike; the table reports the fastest round (min) and the median. Usage::

    python bench/embed.py                       # paper variant, batches 1, 8, 32
    python bench/embed.py --small --batches 1,8 # quick run on the small fixture-sized model
    python bench/embed.py --checkpoint briar --images DIR  # the released weights (local path or Hub cache)
"""

from __future__ import annotations

import argparse
import copy
import functools
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

from facemoe.model import SwinBlock, WindowAttention, create_facemoe  # noqa: E402
from facemoe.moe import MoEMlp, load_balance_loss, router_z_loss  # noqa: E402
from facemoe.packed import native_bf16, pack_for_cpu  # noqa: E402
from facemoe.quantize import quantize_int8  # noqa: E402

SMALL = dict(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 4))


class ReferenceMoE(nn.Module):
    """The original dispatch: one boolean search per expert and an indexed accumulate."""

    def __init__(self, moe: MoEMlp):
        super().__init__()
        self.experts, self.router, self.k = moe.experts, moe.router, moe.k

    def forward(self, x):
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        logits = self.router.gate(tokens)
        gates, idx = torch.topk(logits, self.k, dim=1)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.where(idx == e)
            if rows.numel():
                out[rows] += expert(tokens[rows]) * gates[rows, slot, None]
        return out.reshape(shape), router_z_loss(logits) + load_balance_loss(logits, idx)


class ReferenceAttention(nn.Module):
    """The original window attention: scaled q @ k^T, + bias, + mask, explicit softmax, @ v."""

    def __init__(self, attn: WindowAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x, mask=None):
        a = self.attn
        Bw, N, C = x.shape
        h = a.num_heads
        q, k, v = a.qkv(x).reshape(Bw, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        scores = (q * a.scale) @ k.transpose(-2, -1) + a.position_bias().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            scores = (scores.view(-1, nW, h, N, N) + mask[None, :, None]).view(-1, h, N, N)
        x = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(Bw, N, C)
        return a.proj(x)


class ReferenceBlock(nn.Module):
    """The original Swin block in eval mode: roll, window partition, attention, window reverse, roll back."""

    def __init__(self, block: SwinBlock):
        super().__init__()
        self.block = block

    def forward(self, x):
        b = self.block
        (H, W), s, w = b.resolution, b.shift_size, b.window_size
        B, L, C = x.shape
        shortcut = x
        x = b.norm1(x).view(B, H, W, C)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        x = b.attn(windows, b.attn_mask).view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(B, H, W, C)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + x.reshape(B, L, C)
        y = b.mlp(b.norm2(x))
        y, aux = y if isinstance(y, tuple) else (y, 0.0)
        return x + y, aux


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules that shares its weight tensors."""
    return copy.deepcopy(model, memo={id(t): t for t in [*model.parameters(), *model.buffers()]})


def reference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` sharing its weight tensors, with the reference MoE and attention swapped in and
    without the model's eval micro-batching."""
    ref = shared_copy(model)
    ref.eval_chunk_tokens = 0  # the original runs the whole batch through every stage at once
    for module in list(ref.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, MoEMlp):
                setattr(module, name, ReferenceMoE(child))
            elif isinstance(child, WindowAttention):
                setattr(module, name, ReferenceAttention(child))
    for stage in ref.layers:
        stage.blocks = nn.ModuleList(ReferenceBlock(block) for block in stage.blocks)
    return ref


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


def load_inputs(images: Path | None, batch: int, size: int, seed: int) -> torch.Tensor:
    """``[batch, 3, size, size]`` in [-1, 1]: aligned face crops from a folder (cycled), else seeded noise."""
    if images is None:
        return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    import cv2

    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        raise SystemExit(f"error: no .jpg/.png images in {images}")
    crops = [
        cv2.resize(
            cv2.imread(str(files[i % len(files)]))[:, :, ::-1], (size, size), interpolation=cv2.INTER_CUBIC
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
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
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

    engines = {"model": model, "nn.Linear": unpacked, "reference": reference}
    if not args.no_int8:
        engines["int8"] = quantize_int8(unpacked)
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

    rows = []
    for batch in batches:
        x = load_inputs(args.images, batch, size, args.seed + batch)
        times = {name: [] for name in engines}
        with torch.inference_mode():
            outputs = {name: engine(x) for name, engine in engines.items()}  # warm-up
            names = list(engines)
            for round_ in range(args.repeats):  # the starting engine rotates from round to round
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    times[name].append(_timed(functools.partial(engines[name], x)))
        best = {name: min(t) for name, t in times.items()}
        med = {name: statistics.median(t) for name, t in times.items()}
        row = dict(
            batch=batch,
            model=batch / best["model"],
            reference=batch / best["reference"],
            unpacked=batch / best["nn.Linear"],
            model_med=batch / med["model"],
            reference_med=batch / med["reference"],
            gflops=gflop * batch / best["model"],
        )
        for low in ("int8", "bf16"):
            if low in engines:
                cosine = F.cosine_similarity(outputs[low], outputs["model"])
                row[low] = (best["model"] / best[low], float(cosine.mean()), float(cosine.min()))
        if "onnxruntime" in engines:
            row["ort"] = batch / best["onnxruntime"]
        rows.append(row)
        print(
            f"batch {batch}: " + ", ".join(f"{n} min {best[n]:.3f}s median {med[n]:.3f}s" for n in engines),
            flush=True,
        )
    print_table(rows, peak)
    return 0


def print_table(rows: list[dict], peak: float) -> None:
    head = [
        "batch",
        "model crops/s",
        "nn.Linear crops/s",
        "reference crops/s",
        "ratio (median)",
        "GFLOP/s (% matmul)",
    ]
    lows = [low for low in ("int8", "bf16") if low in rows[0]]
    for low in lows:
        head += [f"{low} speed-up", f"{low} cosine mean (min)"]
    if "ort" in rows[0]:
        head += ["onnxruntime crops/s", "ort / torch"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [
            str(r["batch"]),
            f"{r['model']:.2f}",
            f"{r['unpacked']:.2f}",
            f"{r['reference']:.2f}",
            f"{r['model'] / r['reference']:.2f} ({r['model_med'] / r['reference_med']:.2f})",
            f"{r['gflops']:.0f} ({100 * r['gflops'] / peak:.0f}%)",
        ]
        for low in lows:
            speedup, mean, least = r[low]
            cells += [f"{speedup:.2f}x", f"{mean:.4f} ({least:.4f})"]
        if "ort" in r:
            cells += [f"{r['ort']:.2f}", f"{r['ort'] / r['model']:.2f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
