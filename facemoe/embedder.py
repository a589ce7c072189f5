"""``FaceMoEEmbedder``: aligned crops in, unit embeddings and their norms (the quality signal) out."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from core.errors import InputError
from core.types import check_crops

from .checkpoint import load_model
from .model import FaceMoE
from .packed import native_bf16, pack_for_cpu, packing_available
from .preprocess import ResizeMode, embed_flip_fused, to_model_input
from .quantize import quantize_int8

__all__ = ["FaceMoEEmbedder", "Precision", "embedder_id", "weights_tag"]

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "int8", "bf16", "fp16"]


class FaceMoEEmbedder:
    """Batched FaceMoE inference with the authors' evaluation preprocessing and flip fusion.

    ``precision``: ``fp32`` (default, any device), ``int8`` (CPU, :func:`facemoe.quantize.quantize_int8`),
    ``bf16`` (autocast on CUDA; on a CPU with AVX512-BF16 or AMX, bf16 linear layers with an fp32 residual
    stream, :func:`facemoe.packed.pack_for_cpu`), ``fp16`` (autocast on CUDA). ``embed`` returns float32
    ``(unit [N, 512], norms [N])``. The given model is put in eval mode on ``device``; with ``int8`` it is
    quantised in place, with CPU ``bf16`` packed in place, and in fp32 on the CPU its linear layers are
    pre-packed for oneDNN in place (same math, faster) unless ``packed=False``: a packed or quantised model
    can no longer be trained, copied or saved.

    ``embedder_id`` is the one name of FaceMoE templates (the gallery, its indexes and the match log key
    templates by it; templates of different ids never mix), :func:`embedder_id`:
    ``facemoe-<tag>-k<k>-<precision>[-flip]``. ``<tag>`` is the checkpoint file's tag
    (:func:`facemoe.checkpoint.file_tag`) when the model holds the weights of a file (:meth:`from_checkpoint`,
    :func:`facemoe.checkpoint.load_model`, timm's pretrained loading), else a digest of its weights
    (:func:`weights_tag`); ``<k>`` the model's top-k. Every constructor path computes it here, so the same file,
    top-k, precision and flip give the same id; packing (same math) does not change it.
    """

    def __init__(
        self,
        model: FaceMoE,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        precision: Precision = "fp32",
        flip: bool = True,
        resize: ResizeMode = "pil",
        packed: bool = True,
    ):
        if batch_size < 1:
            raise InputError(f"batch_size: expected >= 1, got {batch_size}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' requested but no CUDA device is available")
        if precision == "int8" and self.device.type != "cpu":
            raise InputError(f"precision 'int8' runs on the CPU, got device {self.device}")
        if precision not in ("fp32", "int8", "bf16", "fp16"):
            raise InputError(f"precision: expected fp32, int8, bf16 or fp16, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise InputError(f"precision 'fp16' needs a CUDA device, got {self.device}")
        if precision == "bf16" and self.device.type == "cpu" and not native_bf16():
            raise InputError(
                "precision 'bf16' on the CPU needs AVX512-BF16 or AMX, which this CPU lacks "
                "(or this PyTorch has no oneDNN): use fp32 or int8"
            )
        tag = model.checkpoint_tag or weights_tag(model)  # before quantising or packing changes the state
        model = model.eval().to(self.device)
        if precision == "int8":
            model = quantize_int8(model, inplace=True)  # no second copy of the fp32 weights
        elif precision == "bf16" and self.device.type == "cpu":
            model = pack_for_cpu(model, dtype=torch.bfloat16)
        elif precision == "fp32" and self.device.type == "cpu" and packed:
            if packing_available():
                model = pack_for_cpu(model)
            else:
                logger.warning("this PyTorch has no oneDNN CPU kernels: FaceMoE runs unpacked (slower)")
        self.model = model
        self.batch_size = batch_size
        self.precision = precision
        self.flip = flip
        self.resize = resize
        self.dim = model.num_features
        self.embedder_id = embedder_id(tag, model.cfg.k, precision, flip)

    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike,
        k: int = 2,
        device: str | torch.device = "cpu",
        cache_dir=None,
        **kwargs,
    ) -> FaceMoEEmbedder:
        """Load an official ``model.pt`` (path or release name such as ``briar``) and wrap it."""
        return cls(load_model(source, k=k, device="cpu", cache_dir=cache_dir), device=device, **kwargs)

    def _autocast(self):
        if self.precision in ("bf16", "fp16") and self.device.type == "cuda":
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Aligned 112x112 BGR uint8 crops -> (unit features float32 ``[N, 512]``, norms float32 ``[N]``)."""
        batch = check_crops(crops)
        units = np.zeros((len(batch), self.dim), np.float32)
        norms = np.zeros((len(batch),), np.float32)
        for start in range(0, len(batch), self.batch_size):
            x = to_model_input(batch[start : start + self.batch_size], resize=self.resize).to(self.device)
            with self._autocast():
                unit, norm = embed_flip_fused(self.model, x, flip=self.flip)
            units[start : start + len(x)] = unit.cpu().numpy()
            norms[start : start + len(x)] = norm.squeeze(1).cpu().numpy()
        return units, norms


def embedder_id(tag: str, k: int, precision: str, flip: bool) -> str:
    """``facemoe-<tag>-k<k>-<precision>[-flip]``: the one formula of FaceMoE template ids."""
    return f"facemoe-{tag}-k{k}-{precision}{'-flip' if flip else ''}"


def weights_tag(model: torch.nn.Module) -> str:
    """12 hex digits of SHA-256 over the state dict (names, shapes, dtypes, bytes): weights of unknown origin."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        digest.update(f"{name}:{list(value.shape)}:{value.dtype};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:12]
