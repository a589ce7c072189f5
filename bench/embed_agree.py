"""Agreement of a reduced-precision FaceMoE with the fp32 model: routing, crops with their flips, templates.

* :func:`record_routing` collects, while a model runs, each MoE router's top-k expert sets (sorted) per token;
  :func:`routing_agreement` compares two such records: per router and overall, the share of tokens whose top-k
  expert set equals the reference's.
* :func:`template_cosines` embeds crops as the pipeline does (each crop with its horizontal flip, fused by
  :func:`facemoe.preprocess.embed_flip_fused`), fuses groups of consecutive crops into templates
  (:func:`core.fusion.pre_norm_vector_add`, as ``stages/aggregate.py`` does with quality weights of 1), and gives
  the cosine of each engine's crops and templates to the fp32 model's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.fusion import pre_norm_vector_add
from facemoe.moe import TopKRouter
from facemoe.preprocess import embed_flip_fused

__all__ = ["OVERALL", "record_routing", "routing_agreement", "template_cosines"]

OVERALL = "overall"  # the key of the share over every router's tokens together


@contextlib.contextmanager
def record_routing(model: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """While inside, every call of ``model``'s routers appends its sorted top-k expert ids ``[T, k]`` to
    ``record[router name without ".router"]``."""
    record: dict[str, list[torch.Tensor]] = {}

    def hook(module, args, out, name):
        record.setdefault(name, []).append(out.indices.sort(dim=1).values)

    hooks = [
        module.register_forward_hook(functools.partial(hook, name=name.removesuffix(".router")))
        for name, module in model.named_modules()
        if isinstance(module, TopKRouter)
    ]
    try:
        yield record
    finally:
        for handle in hooks:
            handle.remove()


def routing_agreement(
    reference: dict[str, list[torch.Tensor]], other: dict[str, list[torch.Tensor]]
) -> dict[str, float]:
    """Per router, and under :data:`OVERALL` over all of their tokens, the share of tokens whose top-k expert
    set in ``other`` equals ``reference``'s (both from :func:`record_routing` over the same inputs)."""
    if reference.keys() != other.keys():
        raise ValueError(f"routing records of different routers: {sorted(reference)} vs {sorted(other)}")
    shares, equal, total = {}, 0, 0
    for name, parts in reference.items():
        mine, theirs = torch.cat(parts), torch.cat(other[name])
        if mine.shape != theirs.shape:
            raise ValueError(f"{name}: routing records over different tokens: {mine.shape} vs {theirs.shape}")
        same = (mine == theirs).all(dim=1)
        shares[name] = float(same.float().mean()) if len(same) else 1.0
        equal, total = equal + int(same.sum()), total + len(same)
    shares[OVERALL] = equal / total if total else 1.0
    return shares


def template_cosines(
    engines: dict[str, nn.Module], x: torch.Tensor, crops_per_template: int, reference: str = "model"
) -> dict[str, dict[str, tuple[float, float]]]:
    """``x [N, 3, H, W]``: per engine other than ``reference``, ``{"crop": (mean, min), "template": (mean, min)}``
    of the cosines to ``reference``'s flip-fused crops and of its templates of ``crops_per_template``
    consecutive crops (the last template may hold fewer)."""
    fused = {}
    with torch.inference_mode():
        for name, engine in engines.items():
            unit, norm = embed_flip_fused(engine, x)
            units, norms = unit.numpy(), norm[:, 0].numpy()
            groups = range(0, len(x), crops_per_template)
            templates = np.stack(
                [
                    pre_norm_vector_add(units[i : i + crops_per_template], norms[i : i + crops_per_template])
                    for i in groups
                ]
            )
            fused[name] = (unit, torch.from_numpy(templates))
    result = {}
    for name, (unit, templates) in fused.items():
        if name == reference:
            continue
        crop = F.cosine_similarity(unit, fused[reference][0])
        template = F.cosine_similarity(templates, fused[reference][1])
        result[name] = {
            "crop": (float(crop.mean()), float(crop.min())),
            "template": (float(template.mean()), float(template.min())),
        }
    return result
