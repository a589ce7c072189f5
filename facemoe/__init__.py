"""FaceMoE: the Swin-MoE face embedder, its official checkpoints, preprocessing, training and evaluation.

Importing the package registers the timm variants ``facemoe_swin_e3k2`` (paper model) and ``facemoe_swin_dense``.
"""
from .checkpoint import load_model, save_checkpoint
from .embedder import FaceMoEEmbedder
from .model import FaceMoE, FaceMoEConfig, create_facemoe

__all__ = ["FaceMoE", "FaceMoEConfig", "FaceMoEEmbedder", "create_facemoe", "load_model", "save_checkpoint"]
