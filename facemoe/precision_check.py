"""Whether bf16 on this CPU keeps a model's embeddings within the templates bar of fp32 (for ``precision: auto``).

bf16 rounding upstream of a router swaps experts wherever a token's k-th and (k+1)-th logits are nearly tied;
how often that happens, and so how far bf16 embeddings fall from fp32 ones, depends on the weights (on seeded
random weights the flip-fused crops reach only 0.996-0.999 of fp32, see docs/bench_embed.md). :func:`bf16_agreement`
measures it on seeded probe crops, embedded as the pipeline embeds them (each with its flip) and fused into one
template as a track's crops are (:func:`core.fusion.pre_norm_vector_add`), so that ``auto`` picks bf16 only for
weights where the template holds the bar.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from core.fusion import pre_norm_vector_add

from .packed import pack_for_cpu
from .preprocess import embed_flip_fused

__all__ = ["AUTO_BAR", "PROBE_CROPS", "Agreement", "bf16_agreement", "probe_crops"]

AUTO_BAR = 0.999  # the cosine to fp32 the probe template must reach for auto to pick bf16
PROBE_CROPS = 4


class Agreement(NamedTuple):
    template: float  # cosine of the bf16 template of the probe crops to the fp32 one
    crop: float  # the lowest cosine of a probe crop's bf16 embedding to its fp32 one


def probe_crops(size: int, count: int = PROBE_CROPS, seed: int = 0) -> torch.Tensor:
    """``[count, 3, size, size]`` seeded model inputs in [-1, 1]: half smooth (random 7x7 colour fields
    upsampled bicubically, image-like), half uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.rand(count - count // 2, 3, 7, 7, generator=generator) * 2 - 1
    smooth = F.interpolate(smooth, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    noise = torch.rand(count // 2, 3, size, size, generator=generator) * 2 - 1
    return torch.cat([smooth, noise])


@torch.inference_mode()
def bf16_agreement(model: nn.Module, flip: bool = True, count: int = PROBE_CROPS) -> Agreement:
    """Cosines between the fp32 CPU ``model``'s embeddings of :func:`probe_crops` (each with its flip when
    ``flip``) and those of a bf16 packed copy (:func:`facemoe.packed.pack_for_cpu`; needs
    :func:`facemoe.packed.native_bf16`): of the template of all ``count`` crops, and the lowest per crop.
    ``model`` is left as it was; the copy shares its weights until packed, then is dropped."""
    model.eval()
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    low = pack_for_cpu(copy.deepcopy(model, memo=shared), dtype=torch.bfloat16)
    x = probe_crops(model.cfg.img_size, count)
    fp32, fp32_norms = embed_flip_fused(model, x, flip=flip)
    bf16, bf16_norms = embed_flip_fused(low, x, flip=flip)
    templates = [
        torch.from_numpy(pre_norm_vector_add(unit.numpy(), norms[:, 0].numpy()))
        for unit, norms in ((fp32, fp32_norms), (bf16, bf16_norms))
    ]
    template = float(F.cosine_similarity(templates[0], templates[1], dim=0))
    return Agreement(template, float(F.cosine_similarity(bf16, fp32).min()))
