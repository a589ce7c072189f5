"""What one training step runs: the backbone with its CosFace head (:class:`TrainModule`) and the learning-rate
schedule (:func:`poly_warmup`)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..model import FaceMoE
from .head import CosFaceHead

__all__ = ["TrainModule", "poly_warmup"]


def poly_warmup(warmup: int, total: int, power: float):
    """LR factor: linear 0 -> 1 over ``warmup`` steps, then ``(1 - progress) ** power`` down to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup)) ** power

    return factor


class TrainModule(nn.Module):
    """Backbone + CosFace head. ``forward(images, labels) -> (identity loss, aux loss)``; the head runs in fp32."""

    def __init__(self, backbone: FaceMoE, head: CosFaceHead, phase: str, amp_dtype: torch.dtype | None):
        super().__init__()
        self.backbone, self.head, self.phase, self.amp_dtype = backbone, head, phase, amp_dtype
        if phase == "head":
            backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.phase == "head":
            self.backbone.eval()  # frozen: BatchNorm statistics and dropout stay as loaded
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        autocast = (
            torch.autocast(images.device.type, dtype=self.amp_dtype)
            if self.amp_dtype
            else contextlib.nullcontext()
        )
        grad = torch.no_grad() if self.phase == "head" else contextlib.nullcontext()
        with autocast, grad:
            emb, aux = self.backbone.forward_with_aux(images)
        aux = torch.as_tensor(aux, dtype=torch.float32, device=images.device)
        with torch.autocast(images.device.type, enabled=False):
            return self.head(emb.float(), labels), aux.float()
