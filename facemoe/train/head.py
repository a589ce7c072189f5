"""CosFace on a (partial) fully connected head: the identity loss of fine-tuning.

``logits = s * (cos(emb, W_c) - m * [c == label])`` with cosines clamped to [-1, 1], then cross-entropy.
With ``sample_rate < 1`` each training step uses the batch's classes plus random other classes, in all
``ceil(sample_rate * C)`` centres (the partial FC idea); evaluation of the loss uses every centre.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CosFaceHead"]


class CosFaceHead(nn.Module):
    """Class centres ``weight [C, D]``; ``forward(emb [B, D], labels [B]) -> loss`` (0-dim, fp32)."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        scale: float = 64.0,
        margin: float = 0.4,
        sample_rate: float = 1.0,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"expected at least 2 classes, got {num_classes}")
        self.scale, self.margin, self.sample_rate = scale, margin, sample_rate
        self.num_sample = max(2, math.ceil(sample_rate * num_classes))
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (num_classes, embedding_size)))

    def _sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(centres to use [S, D], labels re-indexed into them [B])."""
        num_classes = self.weight.shape[0]
        if not self.training or self.num_sample >= num_classes:
            return self.weight, labels
        positive = torch.unique(labels)
        score = torch.rand(num_classes, device=labels.device)
        score[positive] = 2.0  # batch classes are always kept
        index = torch.topk(score, max(self.num_sample, positive.numel())).indices.sort().values
        return self.weight[index], torch.searchsorted(index, labels)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight, target = self._sample(labels)
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(weight.float())).clamp(-1.0, 1.0)
        margin = F.one_hot(target, cosine.shape[1]).to(cosine.dtype) * self.margin
        return F.cross_entropy((cosine - margin) * self.scale, target)
