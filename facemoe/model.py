"""FaceMoE backbone: a Swin transformer whose feed-forward blocks are top-k routed Mixtures of Experts.

Reproduces the official ``backbones/swin_moe.py`` (state-dict keys, buffers, numerics); see
``../shared/fixtures/facemoe/QUIRKS.md`` for the behaviours kept on purpose (raw-logit gates,
-100 shift mask, token-major head flattening, 512-d BatchNorm output that is not normalised).
The blocks live in :mod:`facemoe.blocks`; official checkpoints in :mod:`facemoe.checkpoint`; the timm
registration (``facemoe_swin_e3k2`` and its released weights) in :mod:`facemoe.registry`.

Shapes: B images, N tokens, C channels.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from timm.layers import trunc_normal_
from torch import nn

from .blocks import PatchEmbed, SwinBlock, SwinStage, WindowAttention

# SwinBlock and WindowAttention are re-exported: the benchmarks look for them here.
__all__ = ["FaceMoE", "FaceMoEConfig", "SwinBlock", "WindowAttention", "create_facemoe"]

logger = logging.getLogger(__name__)


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
            raise ValueError(
                f"depths and num_heads need the same length, got {self.depths} and {self.num_heads}"
            )
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        final = self.img_size // self.patch_size // 2 ** (len(self.depths) - 1)
        if final < 1 or (self.img_size // self.patch_size) % 2 ** (len(self.depths) - 1):
            raise ValueError(
                f"a {self.img_size // self.patch_size}-token grid cannot be merged {len(self.depths) - 1} times"
            )
        if self.use_moe and not 1 <= self.k <= self.num_experts:
            raise ValueError(f"top-k must be between 1 and num_experts={self.num_experts}, got k={self.k}")

    def as_dict(self) -> dict:
        return asdict(self)


class FaceMoE(nn.Module):
    """Swin-MoE face embedder. ``[B, 3, 120, 120]`` in [-1, 1] RGB -> ``[B, 512]`` unnormalised embedding.

    ``forward`` returns the embedding like the official model; ``forward_with_aux`` also returns the
    summed router aux loss (z-loss + load balance over every MoE block) for training.

    In eval mode ``forward`` runs each stage over micro-batches of about ``eval_chunk_tokens`` tokens
    (stage 1 of the paper model: 4 images at a time), so that the large activations of big batches stay in
    the caches; every image is computed independently in eval mode, so the result is the same. ``0`` turns
    it off. ``forward_with_aux`` always runs the whole batch at once (the aux losses are batch statistics).

    ``checkpoint_tag`` names the checkpoint file the weights came from (:func:`facemoe.checkpoint.file_tag`, set by
    the loaders of :mod:`facemoe.checkpoint` and :mod:`facemoe.registry`); ``None`` for weights of unknown origin.
    Loading other weights or entering training mode (where BatchNorm statistics and optimizer steps change the
    weights) drops it, so a tag never names weights the model no longer holds.
    """

    eval_chunk_tokens: int = 1600
    checkpoint_tag: str | None = None

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
                    cfg.window_size,
                    drop_paths[first : first + depth],
                    downsample=i < num_stages - 1,
                    norm_layer=norm_layer,
                    mlp_ratio=cfg.mlp_ratio,
                    qkv_bias=cfg.qkv_bias,
                    drop=cfg.drop_rate,
                    attn_drop=cfg.attn_drop_rate,
                    num_experts=cfg.num_experts if cfg.use_moe else 0,
                    k=cfg.k,
                    act_layer=act_layer,
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

    def train(self, mode: bool = True) -> FaceMoE:
        if mode:
            self.checkpoint_tag = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.checkpoint_tag = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

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
