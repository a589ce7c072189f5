"""The benchmark's reference: the official ``backbones/swin_moe.py`` forward (FaceMoE, commit f0972d4), op for op.

``reference_copy(model)`` wraps the modules of a project :class:`facemoe.model.FaceMoE` (unpacked, fp32) and
shares its weight tensors, but runs the official eval forward: the same tensor operations in the same order,
so that its speed is the original's (checked against the original file in docs/bench_embed.md):

* router: logits, a softmax, the z-loss, top-k, a dense dispatch mask by advanced indexing, the balance loss,
  on every call (also in eval);
* MoE: ``nonzero`` of the dispatch mask, a sort by expert, one gather of the routed tokens, a ``[T*E]`` gate
  look-up table, ``torch.unique`` of the experts and per expert ``out[rows] += expert(x) * gate``;
* attention: ``q * scale @ k^T``, the relative position bias added in place into a slice, the shift mask
  through a 5-D view, softmax, ``@ v``; the first 25 rows of each window kept (the official quirk);
* block: roll, window partition, attention, window reverse, roll back, residuals; the whole batch through
  every stage at once (no micro-batches).
"""

from __future__ import annotations

import torch
from torch import nn

from facemoe.blocks import PatchMerging, SwinBlock, WindowAttention
from facemoe.model import FaceMoE
from facemoe.moe import MoEMlp

__all__ = ["reference_copy"]

Z_COEF, BALANCE_COEF = 1e-3, 1e-2


class ReferenceMoE(nn.Module):
    """Router and sorted per-expert dispatch in the official order of operations. ``[B, N, C]`` -> same."""

    def __init__(self, moe: MoEMlp):
        super().__init__()
        self.experts, self.gate = moe.experts, moe.router.gate
        self.num_experts, self.k = moe.num_experts, moe.k

    def route(self, x: torch.Tensor):
        logits = self.gate(x)
        probs = torch.softmax(logits, dim=1)
        z_loss = Z_COEF * torch.mean(logits**2)
        values, indices = torch.topk(logits, self.k, dim=1)
        dispatch = torch.zeros_like(logits)
        dispatch[torch.arange(x.size(0), device=x.device).unsqueeze(-1), indices] = 1.0
        T = x.size(0)
        balance = (
            BALANCE_COEF * self.num_experts * torch.sum(probs.sum(dim=0) * dispatch.sum(dim=0)) / (T * T)
        )
        return dispatch, values, indices, z_loss + balance

    def forward(self, x: torch.Tensor):
        B, N, C = x.shape
        x = x.view(B * N, C)
        dispatch, values, indices, aux = self.route(x)
        T, E = x.size(0), self.num_experts
        pairs = dispatch.nonzero(as_tuple=False)  # [T*k, 2] (token, expert), token-major
        pairs = pairs[pairs[:, 1].sort()[1]]
        tokens, experts = pairs[:, 0], pairs[:, 1]
        routed = x[tokens]
        pair_id = E * tokens + experts
        flat_rows = torch.arange(T, device=x.device).unsqueeze(1).expand(-1, self.k).reshape(-1)
        lookup = x.new_zeros(T * E)
        lookup[flat_rows * E + indices.reshape(-1)] = values.reshape(-1)
        gates = lookup[pair_id]
        present, counts = torch.unique(experts, return_counts=True)
        out = x.new_zeros((T, C))
        start = 0
        for i, e in enumerate(present):
            e, c = e.item(), counts[i].item()
            rows = slice(start, start + c)
            start += c
            expert = self.experts[e]
            y = expert.fc2(expert.drop1(expert.act(expert.fc1(routed[rows]))))
            out[tokens[rows]] += expert.drop2(y) * gates[rows].unsqueeze(-1)
        return out.view(B, N, C), aux


class ReferenceAttention(nn.Module):
    """Window attention as the original: explicit scores, in-place bias, 5-D mask view, softmax, ``@ v``."""

    def __init__(self, attn: WindowAttention):
        super().__init__()
        self.qkv, self.proj = attn.qkv, attn.proj
        self.table, self.index = attn.relative_position_bias_table, attn.relative_position_index
        self.num_heads, self.scale, self.n = attn.num_heads, attn.scale, attn.window_size**2

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        Bw, N, C = x.shape
        h, n = self.num_heads, self.n
        qkv = self.qkv(x).reshape(Bw, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn[:, :, :n, :n] += bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(Bw // nW, nW, h, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, h, N, N)
        attn = torch.softmax(attn, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(Bw, N, C))


def _partition(x: torch.Tensor, w: int) -> torch.Tensor:
    B, H, W, C = x.shape
    return x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, w, w, C)


def _reverse(windows: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    B = int(windows.shape[0] / (H * W / w / w))
    x = windows.view(B, H // w, W // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


class ReferenceBlock(nn.Module):
    """Swin block as the original: roll, partition, attention, first 25 rows, reverse, roll back, MLP."""

    def __init__(self, block: SwinBlock):
        super().__init__()
        self.norm1, self.norm2, self.attn_mask = block.norm1, block.norm2, block.attn_mask
        self.attn = ReferenceAttention(block.attn)
        self.mlp = ReferenceMoE(block.mlp) if isinstance(block.mlp, MoEMlp) else block.mlp
        self.resolution, self.window, self.shift = block.resolution, block.window_size, block.shift_size

    def forward(self, x: torch.Tensor):
        (H, W), w, s = self.resolution, self.window, self.shift
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = _partition(x, w).view(-1, w * w, C)
        windows = self.attn(windows, mask=self.attn_mask)[:, :25].view(-1, w, w, C)
        x = _reverse(windows, w, H, W)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + x.view(B, H * W, C)
        y = self.mlp(self.norm2(x))
        y, aux = y if isinstance(y, tuple) else (y, 0.0)
        return x + y, aux


class ReferenceMerge(nn.Module):
    def __init__(self, merge: PatchMerging):
        super().__init__()
        self.norm, self.reduction, self.resolution = merge.norm, merge.reduction, merge.resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat(
            [x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1
        )
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class ReferenceModel(nn.Module):
    """``[B, 3, 120, 120]`` -> ``[B, 512]``: patch stem, absolute position, stages, norm, flatten, head."""

    def __init__(self, model: FaceMoE):
        super().__init__()
        self.proj, self.patch_norm = model.patch_embed.proj, model.patch_embed.norm
        self.absolute_pos_embed, self.norm, self.feature_layer = (
            model.absolute_pos_embed,
            model.norm,
            model.feature_layer,
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(
                [ReferenceBlock(b) for b in stage.blocks]
                + ([ReferenceMerge(stage.downsample)] if stage.downsample is not None else [])
            )
            for stage in model.layers
        )
        self.cfg = model.cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = self.patch_norm(self.proj(x).flatten(2).transpose(1, 2))
        x = x + self.absolute_pos_embed
        total_aux = 0.0
        for stage in self.stages:
            aux = 0.0
            for module in stage:
                if isinstance(module, ReferenceBlock):
                    x, block_aux = module(x)
                    aux += block_aux
                else:
                    x = module(x)
            total_aux += aux
        return self.feature_layer(self.norm(x).reshape(B, -1))


def reference_copy(model: FaceMoE) -> nn.Module:
    """The official forward over ``model``'s own (unpacked, fp32) weight tensors, in eval mode."""
    if any(type(m).__name__.startswith(("Packed", "Int8")) for m in model.modules()):
        raise ValueError("reference_copy: expected an unpacked fp32 FaceMoE")
    return ReferenceModel(model).eval()
