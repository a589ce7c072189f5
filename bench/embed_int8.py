"""int8 diagnostics of bench/embed.py for any checkpoint: routing agreement, per-group sensitivity, a kept set.

``int8_report(model, x)`` prints, on the probe batch ``x``:

* per MoE layer, the share of tokens whose top-k experts (as a set) are the fp32 model's, under full int8;
* per layer group (each Swin block's attention and its experts, :func:`facemoe.quantize.layer_groups`), the mean
  cosine to fp32 of the model with only that group in int8;
* a greedy fp32-kept set: the most sensitive groups kept in fp32, one at a time, until the mean cosine reaches
  the target (or ``max_keep`` groups), then that set built by ``quantize_int8(keep_fp32=...)``, its cosine and
  its speed against the packed fp32 model: the value for ``embed.int8_fp32_layers``.

Groups are swapped one at a time between two copies (fp32 with the int8 LayerNorm smoothing, which is exact,
and fully int8), so the sensitivity scan costs one forward pass per group.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.embed_agree import OVERALL, record_routing, routing_agreement
from facemoe.quantize import layer_groups, quantize_int8, smooth_norm_outputs

__all__ = ["int8_report", "models_routing_agreement"]


def models_routing_agreement(reference: nn.Module, other: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per router (by module name, without ``.router``) and overall: the share of tokens of ``x`` whose top-k
    expert set in ``other`` equals ``reference``'s (:func:`bench.embed_agree.routing_agreement`)."""
    records = []
    for model in (reference, other):
        with record_routing(model) as record, torch.inference_mode():
            model(x)
        records.append(record)
    return routing_agreement(*records)


class _Swapper:
    """Puts groups of the int8 copy into the smoothed fp32 copy and takes them out again."""

    def __init__(self, model: nn.Module):
        self.base = copy.deepcopy(model).eval()
        smooth_norm_outputs(self.base)
        self.int8 = quantize_int8(model)
        self.groups = layer_groups(model)

    def _set(self, source: nn.Module, groups) -> None:
        for group in groups:
            parent, _, name = group.rpartition(".")
            setattr(self.base.get_submodule(parent), name, source.get_submodule(group))

    def cosine(self, int8_groups, x: torch.Tensor, expected: torch.Tensor) -> float:
        fp32 = {g: self.base.get_submodule(g) for g in int8_groups}
        self._set(self.int8, int8_groups)
        try:
            with torch.inference_mode():
                return float(F.cosine_similarity(self.base(x), expected).mean())
        finally:
            for group, module in fp32.items():
                parent, _, name = group.rpartition(".")
                setattr(self.base.get_submodule(parent), name, module)


def _speed(engine: nn.Module, baseline: nn.Module, x: torch.Tensor, rounds: int = 2) -> float:
    """``engine``'s speed over ``baseline``'s: the baseline's time over the engine's (best of interleaved rounds)."""
    best = [float("inf"), float("inf")]
    with torch.inference_mode():
        for _ in range(rounds):
            for i, m in enumerate((engine, baseline)):
                start = time.perf_counter()
                m(x)
                best[i] = min(best[i], time.perf_counter() - start)
    return best[1] / best[0]


def int8_report(
    model: nn.Module, packed: nn.Module, x: torch.Tensor, target: float, max_keep: int
) -> list[str]:
    """Print the report for the unpacked fp32 ``model`` (``packed``: the packed fp32 model, for the speed);
    returns the suggested fp32-kept group names."""
    with torch.inference_mode():
        expected = model(x)
    swap = _Swapper(model)
    routing = models_routing_agreement(model, swap.int8, x)
    overall = routing.pop(OVERALL)
    everything = swap.cosine(swap.groups, x, expected)
    solo = {g: swap.cosine([g], x, expected) for g in swap.groups}
    print(f"\nint8 on {len(x)} probe inputs: mean cosine to fp32 {everything:.4f} with every group in int8")
    print("| block | routing equal to fp32 | cosine, attention alone int8 | cosine, experts alone int8 |")
    print("|---|---|---|---|")
    for block in dict.fromkeys(g.rpartition(".")[0] for g in swap.groups):
        share = routing.get(f"{block}.mlp")
        cells = [block, "-" if share is None else f"{share:.3f}", f"{solo[block + '.attn']:.4f}"]
        print("| " + " | ".join([*cells, f"{solo[block + '.mlp']:.4f}"]) + " |")
    if routing:
        low = min(routing, key=routing.get)
        mean = sum(routing.values()) / len(routing)
        print(
            f"routing equal to fp32: mean {mean:.3f} over the MoE layers, {overall:.3f} over all their tokens, "
            f"lowest {routing[low]:.3f} ({low})"
        )
    keep: list[str] = []
    cosine = everything
    for group in sorted(solo, key=solo.get):
        if cosine >= target or len(keep) >= max_keep:
            break
        keep.append(group)
        cosine = swap.cosine([g for g in swap.groups if g not in keep], x, expected)
        print(f"  keep {group} in fp32: cosine {cosine:.4f}")
    del swap
    if not keep:
        print(f"suggested fp32-kept set for cosine >= {target}: none (every group in int8 reaches it)")
        return keep
    chosen = quantize_int8(model, keep_fp32=keep)
    with torch.inference_mode():
        final = float(F.cosine_similarity(chosen(x), expected).mean())
    reached = "reached" if final >= target else f"not reached within {max_keep} groups"
    print(
        f"suggested fp32-kept set (target {target} {reached}): cosine {final:.4f}, "
        f"{_speed(chosen, packed, x):.2f}x the packed fp32 model's speed; "
        f"embed.int8_fp32_layers: [{', '.join(keep)}]"
    )
    return keep
