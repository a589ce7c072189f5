"""CPU int8 inference: the backbone's attention and expert linear layers as int8 x int8 -> int32 GEMMs.

Each quantised layer (:class:`Int8Linear`) stores its weight as int8 with one scale per output channel and
quantises its input on the fly with one scale per row (per token), so no calibration data is needed; the
product runs through ``torch._int_mm`` and is rescaled to fp32. The inputs of the expert ``fc2`` layers
(GELU outputs, mostly positive) take an asymmetric per-row range, which uses the full 8 bits.

Kept in fp32, because they cost little and their errors carry furthest:

* the routers: their few output columns decide which experts run; quantising them would flip near-tied
  top-k choices for almost no speed;
* the patch-merge ``reduction`` layers and the head's ``Linear`` (together about 1% of the FLOPs), the two
  most sensitive layer groups when measured one at a time.

Before quantising, the per-channel scale of every LayerNorm output is shared with the layers that read it
(:func:`smooth_norm_outputs`): trained Swin models have a few LayerNorm channels far larger than the rest,
which would leave one per-token int8 scale too coarse for all the others. This reparametrisation is exact in
real arithmetic and costs nothing at run time.

The quantised model is for eval only (no training, no state-dict round trip to the official format).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
from torch import nn

from .blocks import SwinBlock
from .moe import MoEMlp, TopKRouter

__all__ = ["Int8Linear", "layer_groups", "quantizable_layers", "quantize_int8", "smooth_norm_outputs"]

logger = logging.getLogger(__name__)

_EPS = 1e-12


class Int8Linear(nn.Module):
    """``nn.Linear`` replacement: int8 weight (per output channel), int8 input (per row), int32 accumulation.

    ``asymmetric``: the input's per-row range is ``[min, max]`` with a zero point instead of ``[-|x|max, |x|max]``.
    Buffers: ``qweight [out, in]`` int8, ``weight_scale [out]``, ``bias [out]`` or None, ``weight_sum [out]``.
    """

    def __init__(self, linear: nn.Linear, asymmetric: bool = False):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(_EPS) / 127.0
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.asymmetric = asymmetric
        qweight = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.register_buffer("qweight", qweight)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        # Sum over the input channels of the int8 weight: the zero-point correction of asymmetric inputs.
        self.register_buffer("weight_sum", qweight.sum(dim=1, dtype=torch.int32).float())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, asymmetric={self.asymmetric}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[..., in]`` float -> ``[..., out]`` float32."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Int8Linear: expected {self.in_features} input features, got {x.shape[-1]}")
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features).float()
        # amin + amax and a multiply by the reciprocal: aminmax and a broadcast division are each ~20x slower here.
        low, high = rows.amin(dim=1, keepdim=True), rows.amax(dim=1, keepdim=True)
        if self.asymmetric:
            scale = ((high - low) / 255.0).clamp_min_(_EPS)
            inverse = scale.reciprocal()
            zero = torch.round(low * inverse).add_(128.0)  # q = round(x / s) - zero spans [-128, 127]
            q = rows.mul(inverse).round_().sub_(zero).clamp_(-128, 127).to(torch.int8)
        else:
            scale = (torch.maximum(high, -low) / 127.0).clamp_min_(_EPS)
            q = rows.mul(scale.reciprocal()).round_().clamp_(-127, 127).to(torch.int8)
        out = torch._int_mm(q, self.qweight.t()).float()
        if self.asymmetric:  # x ~ s * (q + zero), so x @ W^T ~ s * (q @ Wq^T + zero * sum(Wq)) * w_scale
            out.addr_(zero.reshape(-1), self.weight_sum)
        out.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*lead, self.out_features)


@torch.no_grad()
def smooth_norm_outputs(model: nn.Module, alpha: float = 0.5) -> int:
    """Divide each Swin block's LayerNorm output channels by ``s`` and multiply the matching input columns of
    the layers reading them (``qkv``; routers and expert/MLP ``fc1``) by ``s``; returns the number of norms.

    ``s_j = range_j**alpha / wmax_j**(1 - alpha)`` (SmoothQuant's balance, normalised to a geometric mean of 1),
    with ``range_j = |beta_j| + 3 |gamma_j|`` the LayerNorm's affine estimate of channel ``j``'s spread (no
    calibration data) and ``wmax_j`` the largest weight magnitude in column ``j`` of the quantised readers.
    With equal ``gamma`` (as in a freshly initialised model) ``s`` stays close to 1.
    """
    count = 0
    for block in model.modules():
        if not isinstance(block, SwinBlock):
            continue
        _smooth(block.norm1, [block.attn.qkv], [], alpha)
        if isinstance(block.mlp, MoEMlp):
            _smooth(block.norm2, [e.fc1 for e in block.mlp.experts], [block.mlp.router.gate], alpha)
        else:
            _smooth(block.norm2, [block.mlp.fc1], [], alpha)
        count += 2
    return count


def _smooth(norm: nn.LayerNorm, quantised: list[nn.Linear], exact: list[nn.Linear], alpha: float) -> None:
    spread = (norm.bias.abs() + 3 * norm.weight.abs()).clamp_min(_EPS)
    wmax = torch.stack([linear.weight.abs().amax(dim=0) for linear in quantised]).amax(dim=0).clamp_min(_EPS)
    scale = spread.pow(alpha) / wmax.pow(1 - alpha)
    scale /= scale.log().mean().exp()
    norm.weight.div_(scale)
    norm.bias.div_(scale)
    for linear in quantised + exact:
        linear.weight.mul_(scale)


def quantizable_layers(model: nn.Module) -> list[str]:
    """Qualified names of the linear layers :func:`quantize_int8` turns into :class:`Int8Linear`: attention
    ``qkv``/``proj`` and expert (or dense MLP) ``fc1``/``fc2``; not the routers, patch merges or head."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, TopKRouter) or name == "feature_layer":
            continue
        for child_name, child in module.named_children():
            if type(child) is nn.Linear and child_name != "reduction":
                names.append(f"{name}.{child_name}" if name else child_name)
    return names


def layer_groups(model: nn.Module) -> list[str]:
    """The quantisable layers grouped per Swin block: ``<block>.attn`` and ``<block>.mlp`` (experts), in order.

    Any of them (or a single layer, or a whole block or stage) can be named in ``keep_fp32`` of :func:`quantize_int8`.
    """
    return [
        f"{name}.{part}"
        for name, m in model.named_modules()
        if isinstance(m, SwinBlock)
        for part in ("attn", "mlp")
    ]


def _kept(name: str, keep: tuple[str, ...]) -> bool:
    return any(name == k or name.startswith(k + ".") for k in keep)


def quantize_int8(model: nn.Module, inplace: bool = False, keep_fp32: Iterable[str] = ()) -> nn.Module:
    """Return ``model`` in eval mode with its attention and expert/MLP linear layers as :class:`Int8Linear`.

    ``model`` must live on the CPU. With ``inplace=False`` (default) the given model is left untouched and
    a quantised copy is returned; ``inplace=True`` saves the fp32 copy's memory (about 1.9 GB for the paper model).
    ``keep_fp32``: module names (a layer, a group of :func:`layer_groups` such as ``layers.1.blocks.0.mlp``, a
    block or a stage) whose quantisable layers stay fp32; a name that covers none of them raises ``ValueError``.
    """
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 quantisation runs on the CPU, got parameters on {sorted(devices)}")
    keep = tuple(keep_fp32)
    layers = quantizable_layers(model)
    unknown = [k for k in keep if not any(_kept(name, (k,)) for name in layers)]
    if unknown:
        raise ValueError(
            f"keep_fp32: {', '.join(map(repr, unknown))} names no quantisable layer "
            f"(expected names such as {', '.join(layer_groups(model)[:2]) or 'layers.0.blocks.0.attn'})"
        )
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    smooth_norm_outputs(target)
    modules = dict(target.named_modules())
    count = 0
    for name in layers:
        if _kept(name, keep):
            continue
        parent, _, child_name = name.rpartition(".")
        owner = modules[parent]
        setattr(owner, child_name, Int8Linear(getattr(owner, child_name), asymmetric=child_name == "fc2"))
        count += 1
    logger.info(
        "quantised %d linear layers to int8 (routers, patch merges and head kept in fp32%s)",
        count,
        f", and {len(layers) - count} layers under {len(keep)} names kept" if keep else "",
    )
    return target
