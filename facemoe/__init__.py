"""FaceMoE: the Swin-MoE face embedder, its official checkpoints, preprocessing, training and evaluation.

The names below load on first use, so that ``facemoe.errors`` and the command line do not import torch.
Importing ``facemoe.model`` (or touching any of them) registers the timm variants ``facemoe_swin_e3k2``
(paper model) and ``facemoe_swin_dense``.
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
