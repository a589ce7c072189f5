"""CPU inference with the linear layers' weights pre-packed for oneDNN, in fp32 or bf16.

``pack_for_cpu`` swaps every ``nn.Linear`` of an eval-mode model for :class:`PackedLinear`, whose weight is
reordered once into oneDNN's blocked layout, and every GELU MLP (the experts, or the dense MLPs) for
:class:`PackedMlp`, which runs ``fc1`` and the GELU as one kernel.

* ``float32`` (what ``FaceMoEEmbedder`` uses on the CPU): the same fp32 GEMM as ``nn.Linear``, results differ
  by summation order only (about 1e-6 relative); what changes is the speed: no per-call repacking of the weight
  and no separate pass over the ``[T, 4C]`` hidden activations. On a 2-core AMD EPYC (AVX-512) the expert GEMMs
  run at 205-225 GFLOP/s against 145-205 for ``nn.Linear``, small GEMMs (batch 1: 25-100 rows) gaining most.
* ``bfloat16`` (CPUs with AVX512-BF16 or AMX, see :func:`native_bf16`): the attention and MLP/expert weights
  and their inputs are rounded to bf16 and multiplied with fp32 accumulation (about twice the fp32 GEMM rate);
  every output returns to fp32, so the residual stream, norms, softmax and routing stay fp32. The patch-merge
  reductions and the head stay fp32 (packed), as in the int8 mode.

Routers stay ``nn.Linear``: three output columns gain nothing. A packed model is for CPU eval only: its
packed weights cannot be trained, moved, copied or saved; keep the original model (or its checkpoint) for that.
"""

from __future__ import annotations

import logging

import torch
from timm.layers import Mlp
from torch import nn

from .moe import MoEMlp, TopKRouter

__all__ = ["PackedLinear", "PackedMlp", "native_bf16", "pack_for_cpu", "packing_available"]

logger = logging.getLogger(__name__)

_GELU_ALGORITHM = {"none": "none", "tanh": "tanh"}
_DTYPES = (torch.float32, torch.bfloat16)
_FP32_CHILDREN = ("reduction", "feature_layer")  # kept fp32 in bf16 packing: the most sensitive layers
ROW_MULTIPLE = 32  # expert row counts rounded up to it: recurring GEMM shapes, reused oneDNN kernels (MoEMlp)


def packing_available() -> bool:
    """Whether this PyTorch build has the oneDNN CPU kernels that packing needs."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); without it bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return packing_available() and any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class PackedLinear(nn.Module):
    """``nn.Linear`` (optionally followed by GELU) with its weight in oneDNN's blocked layout, on the CPU.

    x: ``[..., in]`` float32 (or ``dtype``) -> ``[..., out]`` float32, or ``dtype`` with ``float_output=False``.
    ``gelu``: None, ``"none"`` (erf) or ``"tanh"``. ``dtype``: the weight's and the product's inputs' type.
    """

    def __init__(
        self,
        linear: nn.Linear,
        gelu: str | None = None,
        dtype: torch.dtype = torch.float32,
        float_output: bool = True,
    ):
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"PackedLinear: expected dtype float32 or bfloat16, got {dtype}")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.dtype = dtype
        self.float_output = float_output
        weight = linear.weight.detach().to(dtype).contiguous()
        # Plain attributes, not buffers: the opaque oneDNN tensor has no storage to save, copy or move.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = None if linear.bias is None else linear.bias.detach().to(dtype).contiguous()
        self.attr = "none" if gelu is None else "gelu"
        self.algorithm = "" if gelu is None else _GELU_ALGORITHM[gelu]

    def extra_repr(self) -> str:
        act = "" if self.attr == "none" else f", fused gelu ({self.algorithm})"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"dtype={self.dtype}{act}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"PackedLinear: expected {self.in_features} input features, got {x.shape[-1]}")
        y = torch.ops.mkldnn._linear_pointwise(
            x.to(self.dtype), self.packed_weight, self.bias, self.attr, [], self.algorithm
        )
        return y.float() if self.float_output else y

    def __deepcopy__(self, memo):
        raise TypeError("a packed FaceMoE cannot be copied: copy or reload the original model, then pack it")


class PackedMlp(nn.Module):
    """``fc1 -> GELU -> fc2`` of a timm ``Mlp`` in eval mode, ``fc1`` and the GELU fused. ``[..., C]`` -> ``[..., C]``
    float32; in bf16 the hidden activations stay bf16 between the two layers."""

    def __init__(self, mlp: Mlp, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.fc1 = PackedLinear(mlp.fc1, gelu=mlp.act.approximate, dtype=dtype, float_output=False)
        self.fc2 = PackedLinear(mlp.fc2, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def _fusable(mlp: Mlp) -> bool:
    return (
        type(mlp.fc1) is nn.Linear
        and type(mlp.fc2) is nn.Linear
        and type(mlp.act) is nn.GELU
        and mlp.act.approximate in _GELU_ALGORITHM
        and isinstance(mlp.norm, nn.Identity)
    )


@torch.no_grad()
def pack_for_cpu(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Swap ``model``'s linear layers for packed ones, in place; returns ``model`` (in eval mode).

    ``dtype``: ``torch.float32`` (exact) or ``torch.bfloat16`` (needs :func:`native_bf16`). Raises
    ``ValueError`` when the model is not on the CPU in float32, or when this PyTorch or CPU cannot do it.
    """
    if not packing_available():
        raise ValueError("packing needs PyTorch's oneDNN (mkldnn) CPU kernels, which this build lacks")
    if dtype not in _DTYPES:
        raise ValueError(f"packing: expected dtype float32 or bfloat16, got {dtype}")
    if dtype == torch.bfloat16 and not native_bf16():
        raise ValueError("bf16 on the CPU needs AVX512-BF16 or AMX, which this CPU lacks: use fp32 or int8")
    found = {(p.device.type, p.dtype) for p in model.parameters()}
    if found - {("cpu", torch.float32)}:
        raise ValueError(f"packing expects float32 parameters on the CPU, got {sorted(map(str, found))}")
    model.eval()
    count = _pack_children(model, dtype)
    for module in model.modules():
        if isinstance(module, MoEMlp):
            module.row_multiple = ROW_MULTIPLE
    logger.info(
        "packed %d linear layers for oneDNN (CPU %s inference)", count, str(dtype).removeprefix("torch.")
    )
    return model


def _pack_children(module: nn.Module, dtype: torch.dtype) -> int:
    """Replace the linear layers and GELU MLPs below ``module``; returns the number of linear layers packed."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, TopKRouter):
            continue
        child_dtype = torch.float32 if name in _FP32_CHILDREN else dtype
        if type(child) is Mlp and _fusable(child):
            setattr(module, name, PackedMlp(child, child_dtype))
            count += 2
        elif type(child) is nn.Linear:
            setattr(module, name, PackedLinear(child, dtype=child_dtype))
            count += 1
        else:
            count += _pack_children(child, child_dtype)
    return count
