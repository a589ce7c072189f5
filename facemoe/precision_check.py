"""Whether bf16 on this CPU keeps a model's embeddings within the templates bar of fp32 (for ``precision: auto``).

bf16 rounding upstream of a router swaps experts wherever a token's k-th and (k+1)-th logits are nearly tied;
how often that happens, and so how far bf16 embeddings fall from fp32 ones, depends on the weights (on seeded
random weights the flip-fused crops reach only 0.996-0.999 of fp32, see docs/bench_embed.md). :func:`bf16_agreement`
measures it on seeded probe crops, embedded as the pipeline embeds them (each with its flip), so that ``auto``
picks bf16 only for weights where it holds the bar.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .packed import pack_for_cpu
from .preprocess import embed_flip_fused

__all__ = ["AUTO_BAR", "PROBE_CROPS", "bf16_agreement", "probe_crops"]

AUTO_BAR = 0.999  # the lowest cosine to fp32 a probe crop may have for auto to pick bf16
PROBE_CROPS = 4


def probe_crops(size: int, count: int = PROBE_CROPS, seed: int = 0) -> torch.Tensor:
    """``[count, 3, size, size]`` seeded model inputs in [-1, 1]: half smooth (random 7x7 colour fields
    upsampled bicubically, image-like), half uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.rand(count - count // 2, 3, 7, 7, generator=generator) * 2 - 1
    smooth = F.interpolate(smooth, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    noise = torch.rand(count // 2, 3, size, size, generator=generator) * 2 - 1
    return torch.cat([smooth, noise])


@torch.inference_mode()
def bf16_agreement(model: nn.Module, flip: bool = True, count: int = PROBE_CROPS) -> float:
    """The lowest cosine between the fp32 CPU ``model``'s embeddings of :func:`probe_crops` and those of a bf16
    packed copy (:func:`facemoe.packed.pack_for_cpu`; needs :func:`facemoe.packed.native_bf16`), each crop with its
    flip when ``flip``. ``model`` is left as it was; the copy shares its weights until packed, then is dropped."""
    model.eval()
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    low = pack_for_cpu(copy.deepcopy(model, memo=shared), dtype=torch.bfloat16)
    x = probe_crops(model.cfg.img_size, count)
    fp32, _ = embed_flip_fused(model, x, flip=flip)
    bf16, _ = embed_flip_fused(low, x, flip=flip)
    return float(F.cosine_similarity(bf16, fp32).min())
