"""onnxruntime sessions of the detect and embed stages: CPU, CUDA or TensorRT execution providers.

The device (``cpu``, ``cuda``, ``cuda:N``) and the config's ``provider`` choose the chain of execution
providers: ``auto`` follows the device (cpu -> CPU; cuda -> CUDA, then CPU for the operators CUDA lacks),
``cuda`` is the same on a GPU, ``tensorrt`` puts TensorRT first (engines built on first use and cached under
``$XDG_CACHE_HOME/facemoe/tensorrt``, fp32), then CUDA, then CPU. A provider this onnxruntime build lacks, or one
it fails to start (missing CUDA / TensorRT libraries), falls back to the next in the chain with one warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import ModelError

__all__ = ["PROVIDER_NAMES", "onnx_session", "provider_chain"]

logger = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def tensorrt_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facemoe" / "tensorrt"


def provider_chain(device: str, provider: str = "auto") -> list:
    """The execution providers wanted for ``device`` and ``provider`` (``auto``, ``cuda`` or ``tensorrt``), first
    choice first, each a name or ``(name, options)``; the CPU provider always last."""
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelError(f"device: onnxruntime models run on cpu or cuda[:N], got {device!r}")
    if provider not in ("auto", "cuda", "tensorrt"):
        raise ModelError(f"provider: expected auto, cuda or tensorrt, got {provider!r}")
    if device == "cpu":
        if provider != "auto":
            raise ModelError(f"provider {provider} runs on a GPU: expected device cuda[:N], got cpu")
        return [PROVIDER_NAMES["cpu"]]
    index = int(device.partition(":")[2] or 0)
    chain: list = []
    if provider == "tensorrt":
        options = {
            "device_id": index,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(tensorrt_cache()),
        }
        chain.append((PROVIDER_NAMES["tensorrt"], options))
    chain.append((PROVIDER_NAMES["cuda"], {"device_id": index}))
    return [*chain, PROVIDER_NAMES["cpu"]]


def _name(entry) -> str:
    return entry if isinstance(entry, str) else entry[0]


def onnx_session(path: Path, threads: int, device: str, what: str, provider: str = "auto"):
    """An ``InferenceSession`` for ``path`` on ``device`` (``cpu``, ``cuda`` or ``cuda:N``) through ``provider``
    (:func:`provider_chain`) with ``threads`` intra-op CPU threads; ``what`` names the model in the log and in the
    one-line :class:`ModelError` of a failure. A wanted provider that is missing falls back with one warning."""
    import onnxruntime as ort

    wanted = provider_chain(device, provider)
    available = ort.get_available_providers()
    chain = [entry for entry in wanted if _name(entry) in available]
    if _name(chain[0]) != _name(wanted[0]):
        _warn_once(
            f"{what}: onnxruntime has no {_name(wanted[0])} (available: {', '.join(available)}; onnxruntime-gpu "
            f"has CUDA and TensorRT): {what} runs on {_name(chain[0])}"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Idle intra-op threads would spin after each run and starve the OpenCV work (letterbox, blobs, crops) and
    # the other stage's threads that come next on the same cores: sleep instead.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if provider == "tensorrt" and _name(chain[0]) == PROVIDER_NAMES["tensorrt"]:
        tensorrt_cache().mkdir(parents=True, exist_ok=True)
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=chain)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated types
        raise ModelError(f"cannot load {what} {path}: {str(exc).splitlines()[0][:200]}") from None
    used = session.get_providers()[0]
    if used != _name(chain[0]):  # onnxruntime started a later provider: the first one's libraries are missing
        _warn_once(
            f"{what}: onnxruntime could not start {_name(chain[0])} (see its log above): {what} runs on {used}"
        )
    logger.info("%s %s on %s", what, path.name, used)
    return session
