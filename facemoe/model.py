"""FaceMoE backbone: a Swin transformer whose feed-forward blocks are top-k routed Mixtures of Experts.

Reproduces the official ``backbones/swin_moe.py`` (state-dict keys, buffers, numerics); see
``../shared/fixtures/facemoe/QUIRKS.md`` for the behaviours kept on purpose (raw-logit gates,
-100 shift mask, token-major head flattening, 512-d BatchNorm output that is not normalised).

Shapes: B images, N tokens, C channels, nW windows per image, w window side, h heads.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import register_model
from torch import nn

from .moe import MoEMlp

__all__ = ["FaceMoE", "FaceMoEConfig", "facemoe_swin_e3k2", "facemoe_swin_dense", "create_facemoe"]

logger = logging.getLogger(__name__)

SHIFT_MASK_VALUE = -100.0


@dataclass(frozen=True)
class FaceMoEConfig:
    """Constructor arguments of the backbone; defaults are the paper model (463,981,776 parameters)."""

    img_size: int = 120
    patch_size: int = 6
    in_chans: int = 3
    embed_dim: int = 384
    depths: tuple[int, ...] = (2, 18, 2)
    num_heads: tuple[int, ...] = (8, 16, 16)
    window_size: int = 5
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.05
    head_drop_rate: float = 0.25
    num_features: int = 512
    use_moe: bool = True
    num_experts: int = 3
    k: int = 2

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths and num_heads need the same length, got {self.depths} and {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        final = self.img_size // self.patch_size // 2 ** (len(self.depths) - 1)
        if final < 1 or (self.img_size // self.patch_size) % 2 ** (len(self.depths) - 1):
            raise ValueError(f"a {self.img_size // self.patch_size}-token grid cannot be merged {len(self.depths) - 1} times")
        if self.use_moe and not 1 <= self.k <= self.num_experts:
            raise ValueError(f"top-k must be between 1 and num_experts={self.num_experts}, got k={self.k}")

    def as_dict(self) -> dict:
        return asdict(self)


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

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
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
        q, k, v = self.qkv(x).reshape(Bw, N, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)  # [B*nW, h, N, hd]
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
        cfg: FaceMoEConfig,
        drop_path: float,
        act_layer: type[nn.Module],
        norm_layer: type[nn.Module],
    ):
        super().__init__()
        if min(resolution) <= window_size:  # the official rule: a single window never shifts
            window_size, shift_size = min(resolution), 0
        self.resolution = resolution
        self.window_size = window_size
        self.shift_size = shift_size
        mask = shift_attention_mask(resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask)  # before the children: official state-dict order
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        hidden = int(dim * cfg.mlp_ratio)
        if cfg.use_moe:
            self.mlp = MoEMlp(dim, hidden, cfg.num_experts, cfg.k, act_layer=act_layer, drop=cfg.drop_rate)
        else:
            self.mlp = Mlp(dim, hidden, act_layer=act_layer, drop=cfg.drop_rate)

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

    def __init__(self, dim, resolution, depth, num_heads, cfg, drop_paths, downsample, act_layer, norm_layer):
        super().__init__()
        self.num_tokens = resolution[0] * resolution[1]
        self.blocks = nn.ModuleList(
            [
                SwinBlock(
                    dim,
                    resolution,
                    num_heads,
                    cfg.window_size,
                    0 if i % 2 == 0 else cfg.window_size // 2,
                    cfg,
                    drop_paths[i],
                    act_layer,
                    norm_layer,
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


class FaceMoE(nn.Module):
    """Swin-MoE face embedder. ``[B, 3, 120, 120]`` in [-1, 1] RGB -> ``[B, 512]`` unnormalised embedding.

    ``forward`` returns the embedding like the official model; ``forward_with_aux`` also returns the
    summed router aux loss (z-loss + load balance over every MoE block) for training.

    In eval mode ``forward`` runs each stage over micro-batches of about ``eval_chunk_tokens`` tokens
    (stage 1 of the paper model: 4 images at a time), so that the large activations of big batches stay in
    the caches; every image is computed independently in eval mode, so the result is the same. ``0`` turns
    it off. ``forward_with_aux`` always runs the whole batch at once (the aux losses are batch statistics).
    """

    eval_chunk_tokens: int = 1600

    def __init__(
        self,
        cfg: FaceMoEConfig | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        **kwargs,
    ):
        super().__init__()
        cfg = cfg or FaceMoEConfig(**_as_tuples(kwargs))
        self.cfg = cfg
        grid = cfg.img_size // cfg.patch_size
        num_stages = len(cfg.depths)
        self.num_features = cfg.num_features
        self.final_dim = cfg.embed_dim * 2 ** (num_stages - 1)
        self.final_tokens = (grid // 2 ** (num_stages - 1)) ** 2

        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, grid * grid, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim, norm_layer)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        drop_paths = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            res = grid // 2**i
            first = sum(cfg.depths[:i])
            self.layers.append(
                SwinStage(
                    cfg.embed_dim * 2**i,
                    (res, res),
                    depth,
                    heads,
                    cfg,
                    drop_paths[first : first + depth],
                    downsample=i < num_stages - 1,
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                )
            )
        self.norm = norm_layer(self.final_dim)
        flat = self.final_dim * self.final_tokens
        self.feature_layer = nn.Sequential(
            nn.BatchNorm1d(flat),
            nn.Dropout(cfg.head_drop_rate),
            nn.Linear(flat, cfg.num_features),
            nn.BatchNorm1d(cfg.num_features),
        )
        trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"absolute_pos_embed"}

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """x: ``[B, 3, H, W]`` -> (tokens ``[B, N_final, C_final]`` after the final norm, aux loss)."""
        x = self.pos_drop(self.patch_embed(x) + self.absolute_pos_embed)
        aux = 0.0
        for layer in self.layers:
            x, layer_aux = layer(x)
            aux = aux + layer_aux
        return self.norm(x), aux

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, N_final, C_final]`` -> ``[B, 512]``; tokens flattened token-major, no pooling."""
        return self.feature_layer(x.reshape(x.shape[0], -1))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """x: ``[B, 3, H, W]`` -> (embedding ``[B, 512]``, aux loss: a 0-dim tensor, 0.0 for a dense model)."""
        x, aux = self.forward_features(x)
        return self.forward_head(x), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 3, H, W]`` -> embedding ``[B, 512]`` (unnormalised)."""
        if self.training or self.eval_chunk_tokens <= 0 or _tracing():
            return self.forward_with_aux(x)[0]
        x = self.pos_drop(self.patch_embed(x) + self.absolute_pos_embed)
        for layer in self.layers:
            step = max(1, self.eval_chunk_tokens // layer.num_tokens)
            if x.shape[0] > step:
                x = torch.cat([layer(part)[0] for part in x.split(step)])
            else:
                x = layer(x)[0]
        return self.forward_head(self.norm(x))


def _tracing() -> bool:
    """Inside ``torch.jit.trace``, ONNX export or ``torch.compile``: keep the graph free of batch-size splits."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _as_tuples(kwargs: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def create_facemoe(**kwargs) -> FaceMoE:
    """Build a FaceMoE from keyword arguments of :class:`FaceMoEConfig` (lists accepted for tuples)."""
    return FaceMoE(FaceMoEConfig(**_as_tuples(kwargs)))


def _create(variant_kwargs: dict, pretrained: bool, kwargs: dict) -> FaceMoE:
    for ignored in ("pretrained_cfg", "pretrained_cfg_overlay", "num_classes", "cache_dir"):
        kwargs.pop(ignored, None)
    model = create_facemoe(**{**variant_kwargs, **kwargs})
    if pretrained:
        from .checkpoint import load_pretrained

        load_pretrained(model, "briar")
    return model


@register_model
def facemoe_swin_e3k2(pretrained: bool = False, **kwargs) -> FaceMoE:
    """The paper model: img 120, patch 6, dim 384, depths 2/18/2, heads 8/16/16, window 5, 3 experts, top-2."""
    return _create(dict(num_experts=3, k=2), pretrained, kwargs)


@register_model
def facemoe_swin_dense(pretrained: bool = False, **kwargs) -> FaceMoE:
    """The same Swin backbone with dense MLPs (``use_moe=False``); no released weights."""
    if pretrained:
        raise ValueError("no released weights exist for facemoe_swin_dense")
    return _create(dict(use_moe=False), False, kwargs)
