"""Face embedding backends behind one interface: FaceMoE (torch) and any ONNX face embedder.

Every backend takes aligned 112x112 BGR uint8 crops and returns ``(features, norms)``: unit-length float32
features ``[N, dim]`` and the float32 norms ``[N]`` of the raw features (the fusion weights of
``pre_norm_vector_add``). An empty input gives ``[0, dim]`` and ``[0]``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from core.types import CROP_SIZE, check_crops
from facemoe.errors import CheckpointError

from .config import EmbedConfig
from .cores import CoreBudget
from .errors import ModelError
from .onnx_session import onnx_session

__all__ = ["Embedder", "FaceMoEBackend", "OnnxEmbedder", "build_embedder", "file_digest"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    embedder_id: str  # stable: model name + a digest of its weights; templates of different ids never mix
    dim: int

    def embed(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """First 12 hex digits of the SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:12]


def _unit(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(raw, axis=1).astype(np.float32)
    return (raw / np.maximum(norms, 1e-12)[:, None]).astype(np.float32), norms


class OnnxEmbedder:
    """An ONNX face embedder with declared preprocessing: ``(pixel / pixel_scale - mean) / std`` per channel."""

    cores: CoreBudget | None = None  # onnxruntime's thread count is fixed per session: no budget followed

    def __init__(self, cfg: EmbedConfig) -> None:
        self.cfg = cfg
        path = Path(cfg.model or "").expanduser()
        if not path.is_file():
            raise ModelError(f"embedder model not found: {path} (expected an .onnx file)")
        self.session = onnx_session(path, cfg.threads, cfg.device, "embedder", provider=cfg.provider)
        inp = self.session.get_inputs()[0]
        if list(inp.shape[1:]) != [3, CROP_SIZE, CROP_SIZE]:
            raise ModelError(f"{path}: expected input [N, 3, {CROP_SIZE}, {CROP_SIZE}], got {inp.shape}")
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        out_dim = self.session.get_outputs()[0].shape[-1]
        if not isinstance(out_dim, int):
            out_dim = self._run(np.zeros((1, 3, CROP_SIZE, CROP_SIZE), np.float32)).shape[1]
        self.dim = int(out_dim)
        self.embedder_id = f"onnx:{path.stem}:{file_digest(path)}"
        self._scale = np.float32(1.0 / cfg.pixel_scale)
        self._mean = np.asarray(cfg.mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(cfg.std, np.float32).reshape(1, 3, 1, 1)

    def _run(self, blob: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: blob})[0]
        return np.concatenate(
            [self.session.run(None, {self.input_name: blob[i : i + 1]})[0] for i in range(len(blob))]
        )

    def _blob(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack(crops)
        if self.cfg.channel_order == "rgb":
            batch = batch[..., ::-1]
        blob = batch.transpose(0, 3, 1, 2).astype(np.float32) * self._scale
        return np.ascontiguousarray((blob - self._mean) / self._std)

    def embed(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        check_crops(crops)
        if not len(crops):
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        parts = []
        for start in range(0, len(crops), self.cfg.batch_size):
            blob = self._blob(crops[start : start + self.cfg.batch_size])
            raw = self._run(blob)
            if self.cfg.flip:
                raw = raw + self._run(np.ascontiguousarray(blob[..., ::-1]))
            parts.append(raw.astype(np.float32))
        return _unit(np.concatenate(parts))


class FaceMoEBackend:
    """The FaceMoE model through ``facemoe.embedder.FaceMoEEmbedder`` (a local model.pt or a release name). On the
    CPU with ``cores``, its torch threads follow the budget (:class:`stages.cores.CoreBudget`): every core while
    detection idles, the rest while it runs; ``cores`` is then this backend's, else None."""

    cores: CoreBudget | None = None

    def __init__(self, cfg: EmbedConfig, cores: CoreBudget | None = None) -> None:
        from facemoe.embedder import FaceMoEEmbedder  # torch is imported only when this backend is chosen

        self.cfg = cfg
        source = str(cfg.checkpoint)
        try:
            self._model = FaceMoEEmbedder.from_checkpoint(
                source,
                k=cfg.k,
                device=cfg.device,
                batch_size=cfg.batch_size,
                precision=cfg.precision,
                flip=cfg.flip,
                int8_fp32_layers=cfg.int8_fp32_layers,
            )
        except CheckpointError as exc:  # the config key to change, then what the checkpoint loader says
            raise CheckpointError(f"embed.checkpoint {source!r}: {exc}") from None
        self.embedder_id = self._model.embedder_id  # the one formula: facemoe.embedder.FaceMoEEmbedder
        self.dim = int(self._model.dim)
        if cores is not None and self._model.device.type == "cpu":
            self.cores = cores
            self._model.follow_threads(cores.embed_threads)

    def embed(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        check_crops(crops)
        if not len(crops):
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), np.float32)
        feats, norms = self._model.embed(list(crops))
        return np.asarray(feats, np.float32), np.asarray(norms, np.float32)


def build_embedder(cfg: EmbedConfig, cores: CoreBudget | None = None) -> Embedder:
    """The backend named by ``cfg.backend``; ``cores``: the budget a CPU FaceMoE shares with detection."""
    if cfg.backend == "onnx":
        return OnnxEmbedder(cfg)
    return FaceMoEBackend(cfg, cores)
