"""onnxruntime sessions of the detect and embed stages, on the CPU or a CUDA GPU."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ModelError

__all__ = ["onnx_session"]

logger = logging.getLogger(__name__)


def _providers(device: str, available: list[str]) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not device.startswith("cuda"):
        raise ModelError(f"device: onnxruntime models run on cpu or cuda[:N], got {device!r}")
    if "CUDAExecutionProvider" not in available:
        raise ModelError(
            f"device {device}: expected onnxruntime with the CUDA provider, got providers "
            f"{', '.join(available)} (replace onnxruntime by onnxruntime-gpu)"
        )
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def onnx_session(path: Path, threads: int, device: str, what: str):
    """An ``InferenceSession`` for ``path`` on ``device`` (``cpu``, ``cuda`` or ``cuda:N``) with ``threads``
    intra-op CPU threads; ``what`` names the model in the one-line :class:`ModelError` of a failure."""
    import onnxruntime as ort

    providers = _providers(device, ort.get_available_providers())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated types
        raise ModelError(f"cannot load {what} {path}: {str(exc).splitlines()[0][:200]}") from None
    logger.info("%s %s on %s", what, path.name, session.get_providers()[0])
    return session
