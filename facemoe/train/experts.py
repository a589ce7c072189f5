"""Expert-load statistics of every MoE block, overall and per effective face size; router loss parts.

Forward hooks on the routers read each micro-batch's top-k choices; nothing is stored on the model.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch
from torch import nn

from ..moe import MoEMlp, load_balance_loss, router_z_loss

__all__ = ["ExpertLoad"]


class ExpertLoad:
    """Counts, per MoE block and face-size bucket, how many token slots each expert received.

    ``bins``: face-size edges in px; bucket i holds sizes in ``[edge[i-1], edge[i])``.
    Call :meth:`set_batch` with the batch's face sizes before each forward.
    """

    def __init__(self, model: nn.Module, bins: tuple[int, ...]):
        self.blocks = {name: m for name, m in model.named_modules() if isinstance(m, MoEMlp)}
        self.edges = np.asarray(bins, dtype=np.float64)
        self.labels = self._bucket_labels(bins)
        self.num_experts = next(iter(self.blocks.values())).num_experts if self.blocks else 0
        self.counts = {n: np.zeros((len(self.labels), self.num_experts)) for n in self.blocks}
        self.totals = {n: np.zeros_like(c) for n, c in self.counts.items()}
        self.z_loss = 0.0
        self.balance_loss = 0.0
        self._bucket: np.ndarray | None = None
        self._handles = [m.router.register_forward_hook(self._hook(n)) for n, m in self.blocks.items()]

    @staticmethod
    def _bucket_labels(bins: tuple[int, ...]) -> list[str]:
        edges = [0, *bins, None]
        return [f"{lo}-{hi}px" if hi is not None else f">={lo}px" for lo, hi in pairwise(edges)]

    def set_batch(self, face_px) -> None:
        self._bucket = np.searchsorted(self.edges, np.asarray(face_px, dtype=np.float64), side="right")

    def _hook(self, name: str):
        def record(module, inputs, out) -> None:
            if self._bucket is None:
                return
            with torch.no_grad():
                self.z_loss += float(router_z_loss(out.logits))
                self.balance_loss += float(load_balance_loss(out.logits, out.indices))
                per_image = out.indices.reshape(len(self._bucket), -1)
                onehot = torch.zeros(per_image.shape[0], self.num_experts, device=per_image.device)
                onehot.scatter_add_(1, per_image, torch.ones_like(per_image, dtype=onehot.dtype))
                np.add.at(self.counts[name], self._bucket, onehot.cpu().numpy())

        return record

    def take_losses(self) -> tuple[float, float]:
        """(summed z-loss, summed balance loss) since the last call, then reset."""
        out = (self.z_loss, self.balance_loss)
        self.z_loss = self.balance_loss = 0.0
        return out

    def summary(self, total: bool = False) -> dict:
        """Per block: expert fractions, coefficient of variation of the load, and per-size fractions,
        since the last :meth:`reset` (or over the whole run with ``total``)."""
        out = {}
        for name, counts in (self.totals if total else self.counts).items():
            total = counts.sum(axis=0)
            frac = total / max(total.sum(), 1.0)
            by_size = {
                label: (row / row.sum()).round(6).tolist()
                for label, row in zip(self.labels, counts)
                if row.sum() > 0
            }
            cv = float(frac.std() / frac.mean()) if frac.mean() > 0 else 0.0
            out[name] = {
                "fraction": frac.round(6).tolist(),
                "cv": round(cv, 6),
                "by_face_size": by_size,
                "tokens": int(total.sum()),
            }
        return out

    def reset(self) -> None:
        """Add the interval's counts to the run totals and start a new interval."""
        for name, counts in self.counts.items():
            self.totals[name] += counts
            counts[:] = 0

    def close(self) -> None:
        for h in self._handles:
            h.remove()
