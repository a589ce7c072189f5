"""The building blocks of the FaceMoE backbone: window helpers, patch stem, window attention, Swin block, patch
merge and stage. They take plain arguments and know nothing of the model's config (:mod:`facemoe.model`).

Shapes: B images, N tokens, C channels, nW windows per image, w window side, h heads.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from .moe import MoEMlp

__all__ = [
    "SHIFT_MASK_VALUE",
    "PatchEmbed",
    "PatchMerging",
    "SwinBlock",
    "SwinStage",
    "WindowAttention",
    "relative_position_index",
    "shift_attention_mask",
    "window_order",
    "window_partition",
]

SHIFT_MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """x: ``[B, H, W, C]`` -> windows ``[B*nW, w*w, C]`` (row-major windows, row-major tokens)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def relative_position_index(window: int) -> torch.Tensor:
    """``[w*w, w*w]`` int64 index into the ``[(2w-1)^2, h]`` bias table: ``(dh + w-1)*(2w-1) + (dw + w-1)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


@functools.cache
def window_order(
    resolution: tuple[int, int], window: int, shift: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token permutations ``[H*W]`` int64: image order -> window order of the image cyclically shifted by
    ``(-shift, -shift)`` (what ``torch.roll`` then :func:`window_partition` give), and its inverse.

    One ``index_select`` each way replaces the two rolls and the partition/reverse copies of every block.
    Cached per shape and device: the indices are constants of the architecture.
    """
    H, W = resolution
    with torch.inference_mode(False), torch.no_grad():  # usable later in training as well as in inference
        index = torch.arange(H * W, device=device).view(1, H, W, 1)
        if shift:
            index = torch.roll(index, shifts=(-shift, -shift), dims=(1, 2))
        forward = window_partition(index, window).reshape(-1)
        inverse = torch.empty_like(forward)
        inverse[forward] = torch.arange(H * W, device=device)
    return forward, inverse


def shift_attention_mask(resolution: tuple[int, int], window: int, shift: int) -> torch.Tensor:
    """``[nW, w*w, w*w]`` mask: 0 within a shifted region, -100 across regions (the official value)."""
    H, W = resolution
    labels = torch.zeros(1, H, W, 1)
    regions = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for hs in regions:
        for ws in regions:
            labels[:, hs, ws, :] = count
            count += 1
    windows = window_partition(labels, window).squeeze(-1)  # [nW, w*w]
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK_VALUE)


class PatchEmbed(nn.Module):
    """Non-overlapping patch stem. ``[B, 3, H, W]`` -> ``[B, N, C]``. Keys: ``proj``, ``norm``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_layer: type[nn.Module]):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias.

    Keys: ``relative_position_bias_table [(2w-1)^2, h]``, ``relative_position_index [w*w, w*w]``, ``qkv``, ``proj``.
    """

    def __init__(
        self, dim: int, window_size: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float
    ):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """``[h, w*w, w*w]``."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``[B*nW, N, C]``; mask: ``[nW, N, N]`` or None -> ``[B*nW, N, C]``.

        ``softmax(q k^T * scale + bias + mask) v`` through the fused ``scaled_dot_product_attention``
        kernel, the relative position bias and the shift mask forming one additive ``attn_mask``.
        """
        Bw, N, C = x.shape
        h = self.num_heads
        q, k, v = (
            self.qkv(x).reshape(Bw, N, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
        )  # [B*nW, h, N, hd]
        bias = self.position_bias().unsqueeze(0)  # [1, h, N, N]
        if mask is not None:
            bias = (bias + mask.unsqueeze(1)).repeat(Bw // mask.shape[0], 1, 1, 1)  # [B*nW, h, N, N]
        drop = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(q * self.scale, k, v, attn_mask=bias, dropout_p=drop, scale=1.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(Bw, N, C)))


class SwinBlock(nn.Module):
    """Pre-norm Swin block, (shifted) window attention then a dense or MoE MLP. ``[B, N, C]`` -> ``[B, N, C]``.

    One DropPath module serves both residual branches, as in the original.
    """

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
        num_experts: int,
        k: int,
        act_layer: type[nn.Module],
        norm_layer: type[nn.Module],
    ):
        """``num_experts`` 0: a dense MLP; else an MoE MLP routing each token to ``k`` of them."""
        super().__init__()
        if min(resolution) <= window_size:  # the official rule: a single window never shifts
            window_size, shift_size = min(resolution), 0
        self.resolution = resolution
        self.window_size = window_size
        self.shift_size = shift_size
        mask = shift_attention_mask(resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask)  # before the children: official state-dict order
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        if num_experts:
            self.mlp = MoEMlp(dim, hidden, num_experts, k, act_layer=act_layer, drop=drop)
        else:
            self.mlp = Mlp(dim, hidden, act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """x: ``[B, H*W, C]`` -> (x ``[B, H*W, C]``, aux loss: 0-dim tensor, or 0.0 for a dense MLP)."""
        B, L, C = x.shape
        to_windows, to_image = window_order(self.resolution, self.window_size, self.shift_size, x.device)
        windows = self.norm1(x).index_select(1, to_windows)  # [B, L, C], (shifted) windows one after another
        y = self.attn(windows.view(-1, self.window_size**2, C), self.attn_mask).view(B, L, C)
        x = x + self.drop_path(y).index_select(1, to_image)
        y = self.mlp(self.norm2(x))
        y, aux = y if isinstance(y, tuple) else (y, 0.0)  # an MoE also returns its aux loss
        return x + self.drop_path(y), aux


class PatchMerging(nn.Module):
    """2x2 token merge. ``[B, H*W, C]`` -> ``[B, H*W/4, 2C]``. Keys: ``reduction`` (no bias), ``norm``."""

    def __init__(self, resolution: tuple[int, int], dim: int, norm_layer: type[nn.Module]):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class SwinStage(nn.Module):
    """A stage of Swin blocks (odd blocks shifted by w//2) and an optional patch merge."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        drop_paths: list[float],
        downsample: bool,
        norm_layer: type[nn.Module],
        **block_kwargs,
    ):
        """``block_kwargs``: the remaining :class:`SwinBlock` arguments (``mlp_ratio`` ... ``act_layer``)."""
        super().__init__()
        self.num_tokens = resolution[0] * resolution[1]
        self.blocks = nn.ModuleList(
            [
                SwinBlock(
                    dim,
                    resolution,
                    num_heads,
                    window_size,
                    0 if i % 2 == 0 else window_size // 2,
                    drop_path=drop_paths[i],
                    norm_layer=norm_layer,
                    **block_kwargs,
                )
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(resolution, dim, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        aux = 0.0
        for block in self.blocks:
            x, block_aux = block(x)
            aux = aux + block_aux
        if self.downsample is not None:
            x = self.downsample(x)
        return x, aux
