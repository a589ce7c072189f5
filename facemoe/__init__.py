"""FaceMoE: the Swin-MoE face embedder, its official checkpoints, preprocessing, training and evaluation.

The names below load on first use, so that ``facemoe.errors`` and the command line do not import torch.
Importing ``facemoe.registry`` registers the timm variants ``facemoe_swin_e3k2`` (the paper model; pretrained
tags ``.briar`` and ``.tinyface``) and ``facemoe_swin_dense``.

Modules, bottom up: ``errors``; ``moe`` -> ``blocks`` -> ``model`` (the backbone) -> ``checkpoint`` (releases,
reading, the one checkpoint filter, loading) -> ``registry`` (timm) and ``embedder``; ``preprocess``, ``packed``,
``quantize``, ``export``; ``evaluate`` and ``train`` on top; ``cli`` and ``export_cli`` register the commands.
Below all of them: ``core`` (errors, config sections and loader, crop contracts, template fusion).
"""

from __future__ import annotations

import importlib

__all__ = ["FaceMoE", "FaceMoEConfig", "FaceMoEEmbedder", "create_facemoe", "load_model", "save_checkpoint"]

_HOME = {
    "FaceMoE": "model",
    "FaceMoEConfig": "model",
    "create_facemoe": "model",
    "FaceMoEEmbedder": "embedder",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'facemoe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
