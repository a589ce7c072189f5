"""Aligned 112x112 BGR crops -> the authors' evaluation input, and the flip test (crop + mirror, fused pre-norm).

Two resize paths exist in the official evaluation code (QUIRKS.md section 10):

* ``"pil"`` (TinyFace): RGB uint8 -> PIL bicubic 112 -> 120 (quantised to uint8) -> [-1, 1];
* ``"tensor"`` (IJB-S): RGB -> float [0, 1] -> bicubic interpolation (``antialias`` False as in the authors'
  torchvision 0.15; values may leave [-1, 1]) -> [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.errors import InputError
from core.types import check_crops

__all__ = ["INPUT_SIZE", "MEAN", "STD", "to_model_input", "split_norm", "fuse_pre_norm", "embed_flip_fused"]

INPUT_SIZE = 120  # the model's input side; aligned crops (core.types.CROP_SIZE) are resized to it
MEAN = STD = 0.5  # per channel, on RGB in [0, 1]: the model sees [-1, 1]
ResizeMode = Literal["pil", "tensor"]


def to_model_input(
    crops: np.ndarray | Sequence[np.ndarray],
    resize: ResizeMode = "pil",
    antialias: bool = False,
) -> torch.Tensor:
    """Aligned BGR uint8 crops -> ``[N, 3, 120, 120]`` float32 RGB normalised with mean = std = 0.5."""
    batch = check_crops(crops)[..., ::-1]  # BGR -> RGB
    if resize == "pil":
        resized = (
            np.stack(
                [
                    np.asarray(
                        Image.fromarray(np.ascontiguousarray(img)).resize(
                            (INPUT_SIZE, INPUT_SIZE), Image.BICUBIC
                        )
                    )
                    for img in batch
                ]
            )
            if len(batch)
            else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        )
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div_(255.0)
    elif resize == "tensor":
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        if len(x):
            x = F.interpolate(
                x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False, antialias=antialias
            )
        else:
            x = x.new_zeros(0, 3, INPUT_SIZE, INPUT_SIZE)
    else:
        raise InputError(f"resize mode: expected 'pil' or 'tensor', got {resize!r}")
    return x.sub_(MEAN).div_(STD).contiguous()


def split_norm(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, D]`` -> (unit vectors ``[N, D]``, norms ``[N, 1]``)."""
    norms = torch.linalg.vector_norm(features, dim=1, keepdim=True)
    return features / norms, norms


def fuse_pre_norm(
    units: Sequence[torch.Tensor], norms: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pre_norm_vector_add``: ``l2norm(sum_i unit_i * norm_i)``; returns (fused unit ``[N, D]``, norm ``[N, 1]``).

    The model's flip test on tensors (a crop and its mirror image), bit for bit the official evaluation code.
    Template fusion (many crops or media into one template) is :mod:`core.fusion`, for every package.
    """
    total = sum(u * n for u, n in zip(units, norms))
    return split_norm(total)


@torch.no_grad()
def embed_flip_fused(
    model: torch.nn.Module, x: torch.Tensor, flip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed ``[N, 3, H, W]`` (and its horizontal flip) -> (fused unit features ``[N, D]``, norms ``[N, 1]``).

    The flip pair runs as one batch of ``2N`` so each crop costs one forward call, and is fused by
    :func:`fuse_pre_norm` (torch, exact to the official flip test); fusing crops into templates is
    :mod:`core.fusion`'s job.
    """
    if not flip:
        return split_norm(model(x).float())
    n = x.shape[0]
    both = model(torch.cat([x, torch.flip(x, dims=[3])])).float()
    feats = split_norm(both[:n]), split_norm(both[n:])
    return fuse_pre_norm([feats[0][0], feats[1][0]], [feats[0][1], feats[1][1]])
