"""``FaceMoEEmbedder``: aligned crops in, unit embeddings and their norms (the quality signal) out."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from core.errors import InputError
from core.types import check_crops

from .checkpoint import load_model
from .model import FaceMoE
from .packed import native_bf16, pack_for_cpu, packing_available
from .precision_check import AUTO_BAR, bf16_agreement
from .preprocess import ResizeMode, embed_flip_fused, to_model_input
from .quantize import quantize_int8

__all__ = ["FaceMoEEmbedder", "Precision", "auto_precision", "embedder_id", "weights_tag"]

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "int8", "bf16", "fp16"]
_CONCRETE = ("fp32", "int8", "bf16", "fp16")


def auto_precision(
    device: str | torch.device, model: torch.nn.Module | None = None, flip: bool = True
) -> tuple[str, str]:
    """The precision ``auto`` stands for on ``device``, and why: ``(precision, reason)``.

    CPU: ``bf16`` where it multiplies bf16 in hardware (AVX512-BF16 or AMX, :func:`facemoe.packed.native_bf16`)
    and, when ``model`` (fp32, on the CPU) is given, its bf16 template of probe crops (with their flips when
    ``flip``) stays within cosine :data:`facemoe.precision_check.AUTO_BAR` of the fp32 one
    (:func:`facemoe.precision_check.bf16_agreement`), else ``fp32``; CUDA: ``bf16`` where the device supports
    it, else ``fp16``; any other device: ``fp32``.
    """
    device = torch.device(device)
    if device.type == "cpu":
        if native_bf16():
            reason = "this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX)"
            if model is None:
                return "bf16", reason
            got = bf16_agreement(model, flip=flip)
            crops = f"lowest crop {got.crop:.5f}"
            if got.template < AUTO_BAR:
                return "fp32", (
                    f"{reason}, but with these weights the bf16 template of probe crops falls to cosine "
                    f"{got.template:.5f} of fp32 ({crops}), below {AUTO_BAR} (experts swapped on near-tied "
                    "router logits)"
                )
            return "bf16", (
                f"{reason}; the bf16 template of probe crops holds cosine {got.template:.5f} >= {AUTO_BAR} "
                f"of fp32 ({crops})"
            )
        return (
            "fp32",
            "this CPU has no AVX512-BF16 or AMX (or this PyTorch no oneDNN): bf16 would be emulated",
        )
    if device.type == "cuda":
        with torch.cuda.device(device):
            name, bf16 = torch.cuda.get_device_name(), torch.cuda.is_bf16_supported()
        if bf16:
            return "bf16", f"{name} supports bf16"
        return "fp16", f"{name} has no bf16 support"
    return "fp32", f"no reduced-precision path on {device.type}"


class FaceMoEEmbedder:
    """Batched FaceMoE inference with the authors' evaluation preprocessing and flip fusion.

    ``precision``: ``auto`` (:func:`auto_precision`: bf16 on a CPU with AVX512-BF16 or AMX where the model's bf16
    template of probe crops stays within cosine 0.999 of fp32, else fp32; on CUDA
    bf16 where supported, else fp16; the choice and its reason logged once, the concrete precision in the id),
    ``fp32`` (default, any device), ``int8`` (CPU, :func:`facemoe.quantize.quantize_int8`, the layers named in
    ``int8_fp32_layers`` kept fp32), ``bf16`` (autocast on CUDA; on a CPU with AVX512-BF16 or AMX, bf16 linear
    layers with an fp32 residual stream, :func:`facemoe.packed.pack_for_cpu`), ``fp16`` (autocast on CUDA).
    Off the CPU the model runs each batch whole (no eval micro-batches). ``embed`` returns float32
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
        int8_fp32_layers: Sequence[str] = (),
    ):
        if batch_size < 1:
            raise InputError(f"batch_size: expected >= 1, got {batch_size}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' requested but no CUDA device is available")
        if precision == "int8" and self.device.type != "cpu":
            raise InputError(f"precision 'int8' runs on the CPU, got device {self.device}")
        if precision == "auto":
            precision, reason = auto_precision(
                self.device, model if self.device.type == "cpu" else None, flip
            )
            logger.info("FaceMoE precision auto: %s on %s (%s)", precision, self.device, reason)
        if precision not in _CONCRETE:
            raise InputError(f"precision: expected auto, fp32, int8, bf16 or fp16, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise InputError(f"precision 'fp16' needs a CUDA device, got {self.device}")
        if precision in ("bf16", "fp16") and self.device.type not in ("cpu", "cuda"):
            raise InputError(
                f"precision {precision!r} runs on CUDA (or bf16 on the CPU), got device {self.device}"
            )
        if int8_fp32_layers and precision != "int8":
            raise InputError(f"int8_fp32_layers applies to precision int8, got precision {precision!r}")
        if precision == "bf16" and self.device.type == "cpu" and not native_bf16():
            raise InputError(
                "precision 'bf16' on the CPU needs AVX512-BF16 or AMX, which this CPU lacks "
                "(or this PyTorch has no oneDNN): use fp32 or int8"
            )
        tag = model.checkpoint_tag or weights_tag(model)  # before quantising or packing changes the state
        model = model.eval().to(self.device)
        if self.device.type != "cpu":
            model.eval_chunk_tokens = 0  # eval micro-batches are for CPU caches; a GPU takes the batch whole
        if precision == "int8":
            try:  # in place: no second copy of the fp32 weights
                model = quantize_int8(model, inplace=True, keep_fp32=int8_fp32_layers)
            except ValueError as exc:
                raise InputError(str(exc)) from None
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
        self._threads: Callable[[], int] | None = None
        self._thread_hooks: list = []

    def follow_threads(self, threads: Callable[[], int] | None) -> None:
        """CPU: run with ``threads()`` torch threads, asked before the model's input stage and each of its blocks
        (``...blocks.N``), so the count follows a budget that changes while a batch runs
        (:class:`stages.cores.CoreBudget`); set in the running thread only (torch's OpenMP thread count is per
        thread). None: the thread count is left alone."""
        for hook in self._thread_hooks:
            hook.remove()
        self._thread_hooks, self._threads = [], threads
        if threads is None or self.device.type != "cpu":
            return
        blocks = [m for name, m in self.model.named_modules() if re.search(r"(^|\.)blocks\.\d+$", name)]
        for module in [self.model, *blocks]:
            self._thread_hooks.append(module.register_forward_pre_hook(self._set_threads))

    def _set_threads(self, *_) -> None:
        wanted = self._threads()
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)

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
