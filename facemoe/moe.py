"""Mixture-of-Experts feed-forward block of FaceMoE: top-k router, experts, sparse dispatch, aux losses.

Behaviour follows the official ``backbones/swin_moe.py``:

* the router is a bias-free linear layer over the whole flattened batch ``[T = B*N, C]``;
* ``torch.topk`` runs on the raw logits and the **raw logit** is the gate that scales each chosen
  expert's output (no softmax, no renormalisation; gates may be negative);
* z-loss ``= 1e-3 * mean(logits**2)`` and load-balance loss
  ``= 1e-2 * E * sum_e(sum_t p[t, e] * count_e) / T**2`` with ``p = softmax(logits)`` and
  ``count_e`` the number of tokens that have ``e`` among their top-k.

Aux losses are returned, never stored on the module.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

__all__ = ["TopKRouter", "RouterOutput", "MoEMlp", "router_z_loss", "load_balance_loss"]

Z_LOSS_WEIGHT = 1e-3
BALANCE_LOSS_WEIGHT = 1e-2


class RouterOutput(NamedTuple):
    logits: torch.Tensor  # [T, E] raw router logits
    gates: torch.Tensor  # [T, k] raw top-k logits, descending
    indices: torch.Tensor  # [T, k] expert ids of the top-k logits


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """``1e-3 * mean(logits**2)`` over all ``T*E`` entries. logits: ``[T, E]``."""
    return Z_LOSS_WEIGHT * logits.pow(2).mean()


def load_balance_loss(logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Switch-style balance loss as the authors compute it.

    logits: ``[T, E]``; indices: ``[T, k]`` top-k expert ids. Equals ``1e-2 * k`` under uniform routing.
    """
    num_tokens, num_experts = logits.shape
    probs = torch.softmax(logits, dim=1)
    dispatch = torch.zeros_like(logits).scatter_(1, indices, 1.0)
    tokens_per_expert = dispatch.sum(dim=0)
    prob_per_expert = probs.sum(dim=0)
    return BALANCE_LOSS_WEIGHT * num_experts * (prob_per_expert * tokens_per_expert).sum() / num_tokens**2


class TopKRouter(nn.Module):
    """Bias-free linear gate with top-k selection on raw logits. Keys: ``gate.weight`` ``[E, C]``."""

    def __init__(self, dim: int, num_experts: int, k: int):
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"top-k must be between 1 and num_experts={num_experts}, got k={k}")
        self.k = k
        self.gate = nn.Linear(dim, num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        """x: ``[T, C]`` -> logits ``[T, E]``, gates/indices ``[T, k]``.

        The logits are fp32 also under autocast or in a half-precision model: rounded to bf16/fp16, near-tied
        logits would swap experts far more often than the rest of the model's rounding would.
        """
        if x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                logits = F.linear(x.float(), self.gate.weight.float())
        else:
            logits = self.gate(x)
        gates, indices = torch.topk(logits, self.k, dim=1)
        # the gates in the tokens' type: a half-precision model's expert sum stays in it
        return RouterOutput(logits, gates.to(x.dtype), indices)


class MoEMlp(nn.Module):
    """Top-k routed experts replacing the Swin MLP. Keys: ``router.gate.weight``, ``experts.{e}.fc{1,2}.*``.

    Each expert is ``Linear(C, H) -> act -> Dropout -> Linear(H, C) -> Dropout`` and runs only on the
    tokens routed to it: token/expert pairs are sorted by expert once (one gather), each expert processes
    one contiguous slice, and its gated result is added back in place with ``index_add_``.

    ``row_multiple`` (0: off; set by :func:`facemoe.packed.pack_for_cpu` and :func:`facemoe.quantize.quantize_int8`):
    each expert's slice is extended to a multiple of it (with the next rows, or zero rows at the end) and the
    extra outputs dropped. The number of tokens an expert gets changes with every batch, and oneDNN builds a
    new kernel for every new row count (2-3 ms for an expert layer on this CPU, a third of the product
    itself); with row counts rounded up, a few dozen shapes per layer recur and their kernels are reused.
    """

    row_multiple: int = 0

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_experts: int = 3,
        k: int = 2,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        self.num_experts = num_experts
        self.k = k
        # Official key order: experts.* before router.*.
        self.experts = nn.ModuleList(
            [Mlp(dim, hidden_dim, act_layer=act_layer, drop=drop) for _ in range(num_experts)]
        )
        self.router = TopKRouter(dim, num_experts, k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ``[B, N, C]`` -> (out ``[B, N, C]``, aux loss 0-dim tensor = z-loss + balance loss)."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        route = self.router(tokens)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            out = self._dispatch_traceable(tokens, route)
        else:
            out = self._dispatch_sorted(tokens, route)
        aux = router_z_loss(route.logits) + load_balance_loss(route.logits, route.indices)
        return out.reshape(shape), aux

    def _dispatch_sorted(self, tokens: torch.Tensor, route: RouterOutput) -> torch.Tensor:
        """One gather, then a contiguous slice and an ``index_add_`` per expert. tokens ``[T, C]``."""
        flat_expert = route.indices.reshape(-1)  # [T*k]
        order = torch.argsort(flat_expert, stable=True)
        token_of = torch.div(order, self.k, rounding_mode="floor")
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()
        step = self.row_multiple
        if step:  # room for the last expert's slice to be rounded up
            routed = tokens.new_empty(len(token_of) + step, tokens.shape[1])
            torch.index_select(tokens, 0, token_of, out=routed[: len(token_of)])
            routed[len(token_of) :].zero_()
        else:
            routed = tokens.index_select(0, token_of)  # [T*k, C] grouped by expert
        gates = route.gates.reshape(-1, 1).index_select(0, order)  # [T*k, 1]
        out = None
        start = 0
        for expert, count in zip(self.experts, counts):
            if count:
                rows = slice(start, start + count)
                if step:
                    y = expert(routed[start : start + -(-count // step) * step])[:count] * gates[rows]
                else:
                    y = expert(routed[rows]) * gates[rows]
                if out is None:  # under autocast the experts may give bf16/fp16 while the tokens stay fp32
                    out = tokens.new_zeros(tokens.shape, dtype=y.dtype)
                out.index_add_(0, token_of[rows], y)
            start += count
        return tokens.new_zeros(tokens.shape) if out is None else out  # no tokens at all: nothing routed

    def _dispatch_traceable(self, tokens: torch.Tensor, route: RouterOutput) -> torch.Tensor:
        """Same math with data-dependent shapes expressed as ops (NonZero/Gather/ScatterElements) for export."""
        out = None
        for e, expert in enumerate(self.experts):
            chosen = route.indices == e  # [T, k]
            rows = torch.nonzero(chosen.any(dim=1)).reshape(-1)
            gate = (route.gates * chosen.to(route.gates.dtype)).sum(dim=1, keepdim=True)
            y = expert(tokens.index_select(0, rows)) * gate.index_select(0, rows)
            if out is None:  # dtype of the gated expert outputs (bf16/fp16 under autocast)
                out = tokens.new_zeros(tokens.shape, dtype=y.dtype)
            out = out.index_add(0, rows, y)
        return out
