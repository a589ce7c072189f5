"""ONNX export of the FaceMoE backbone with a dynamic batch and the top-k routing inside the graph.

The graph takes ``input [B, 3, H, W]`` (float32, RGB in [-1, 1]) and returns ``embedding [B, 512]``
(unnormalised, like ``FaceMoE.forward``). Each MoE block keeps its sparse dispatch: TopK on the router
logits, then per expert NonZero -> Gather -> expert -> ScatterElements(add), so onnxruntime, TensorRT or
Triton run each expert only on its tokens. ``onnx`` and ``onnxruntime`` are optional dependencies.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import FaceMoEError
from .model import FaceMoE

__all__ = ["ExportError", "export_onnx", "onnx_session", "check_onnx"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
DEFAULT_OPSET = 17


class ExportError(FaceMoEError):
    """The model cannot be exported, or the exported graph disagrees with torch."""


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the '{module}' package, which is not installed: pip install {module}"
        ) from exc


def export_onnx(
    model: FaceMoE,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
) -> Path:
    """Write ``model`` (fp32, CPU) to ``path`` as ONNX and return the path.

    ``batch=None`` gives a dynamic batch axis; an int fixes it. The model is exported in eval mode
    (BatchNorm running stats, no dropout) and is put back in the mode it was in.
    """
    _require("onnx")
    if opset < 16:
        raise ExportError(f"opset: expected >= 16 (scatter with reduction), got {opset}")
    if batch is not None and batch < 1:
        raise ExportError(f"batch: expected None (dynamic) or >= 1, got {batch}")
    if {p.device.type for p in model.parameters()} != {"cpu"} or any(
        p.dtype != torch.float32 for p in model.parameters()
    ):
        raise ExportError("export_onnx expects an fp32 model on the CPU (not quantised, not on CUDA)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    sample = torch.zeros(batch or 2, cfg.in_chans, cfg.img_size, cfg.img_size)
    dynamic = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # index_add's export warns about duplicate indices in general; each expert's rows come from
            # NonZero over distinct tokens, so they are unique. The legacy (TorchScript) exporter is the
            # one that handles the data-dependent expert shapes.
            warnings.filterwarnings("ignore", message=".*duplicated values in 'index'.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    logger.info("exported %s (opset %d, batch %s)", path, opset, batch or "dynamic")
    return path


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` for an exported model; ``threads`` sets intra-op threads."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: they would otherwise take the cores from torch's threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(model: FaceMoE, session, batch_sizes=(1, 3, 8), atol: float = 1e-4, seed: int = 0) -> float:
    """Compare onnxruntime with torch on seeded random inputs of each batch size; return the max abs diff.

    Raises :class:`ExportError` naming the batch size when a difference exceeds ``atol``.
    """
    cfg = model.cfg
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    model.eval()
    for b in batch_sizes:
        x = torch.rand(b, cfg.in_chans, cfg.img_size, cfg.img_size, generator=generator) * 2 - 1
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        diff = float(np.abs(got - expected).max())
        if got.shape != expected.shape or diff > atol:
            raise ExportError(
                f"onnxruntime vs torch at batch {b}: expected shape {expected.shape} within {atol}, "
                f"got shape {got.shape} with max abs diff {diff:.3g}"
            )
        worst = max(worst, diff)
    return worst
