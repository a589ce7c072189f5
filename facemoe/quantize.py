"""CPU int8 inference: dynamic quantisation of the backbone's linear layers, experts included.

Weights of every ``nn.Linear`` (attention ``qkv``/``proj``, every expert's ``fc1``/``fc2``, the patch-merge
``reduction`` and the head) are stored as int8 with one scale per output channel; activations are quantised
per batch on the fly, so no calibration data is needed. The routers stay in fp32: their four-column output
decides which experts run, and quantising it would flip near-tied top-k choices for almost no speed.
The quantised model is for eval only (no training, no state-dict round trip to the official format).
"""
from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from .moe import TopKRouter

__all__ = ["quantize_int8"]

logger = logging.getLogger(__name__)


def quantize_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` in eval mode with its linear layers (routers excepted) as dynamic int8 on the CPU.

    ``model`` must live on the CPU. With ``inplace=False`` (default) the given model is left untouched and
    a quantised copy is returned; ``inplace=True`` saves the fp32 copy's memory (about 1.9 GB for the paper model).
    """
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 dynamic quantisation runs on the CPU, got parameters on {sorted(devices)}")
    if torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"):
        raise RuntimeError(
            f"int8 needs the x86, fbgemm or onednn quantised engine, got {torch.backends.quantized.engine!r}"
        )
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in target.named_modules()
        if isinstance(module, nn.Linear) and not _inside_router(target, name)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is marked for migration
        target = quantize_dynamic(target, qconfig_spec=spec, dtype=torch.qint8, inplace=True)
    logger.info("quantised %d linear layers to int8 (routers kept in fp32)", len(spec))
    return target


def _inside_router(root: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    return isinstance(root.get_submodule(parent), TopKRouter) if parent else False
