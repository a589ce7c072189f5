"""Detector backends: the one contract every face detector keeps, and the registry that picks one by name
(``detect.backend``).

A backend is a class built as ``Backend(cfg: DetectConfig, path: Path)`` from the config's ``detect`` section and
the model file, registered under a name with :func:`register`. It keeps :class:`DetectorBackend`:

- ``input_size``: the (w, h) frames are letterboxed into (a model's own fixed size, else ``detect.input_size``);
- ``__call__(images, threshold=None, min_size=None)``: a batch of BGR uint8 frames of any sizes, each letterboxed
  into the input; one :class:`core.types.Detections` per frame, in frame coordinates, landmarks in the ArcFace
  order, scores at least ``threshold`` (default ``detect.score_threshold``), boxes at least ``min_size`` a side
  (default ``detect.min_face_size``);
- ``native(images, threshold, scales)``: images detected as they are (windows and tiles at native resolution,
  padded as the model needs), image ``i`` having been resized by ``scales[i]``: its detections are returned in the
  coordinates before that resize;
- ``concurrent`` (class attribute, False when absent): whether calls may run at once from several threads
  (``detect.workers``).

:class:`stages.detect.FaceDetector` does the rest for every backend (tiling, the schedule's windows, merging, the
self-check). A cheaper pass or another model family is one new module with one registered class, imported by
:mod:`stages.detect`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from core.types import Detections

from .config import DetectConfig
from .errors import ModelError

__all__ = ["BACKENDS", "DetectorBackend", "create_backend", "register"]


@runtime_checkable
class DetectorBackend(Protocol):
    """What :class:`stages.detect.FaceDetector` asks of a detector (see the module's text)."""

    input_size: tuple[int, int]

    def __call__(
        self, images: Sequence[np.ndarray], threshold: float | None = None, min_size: float | None = None
    ) -> list[Detections]: ...

    def native(
        self, images: Sequence[np.ndarray], threshold: float, scales: Sequence[float]
    ) -> list[Detections]: ...


BACKENDS: dict[str, Callable[[DetectConfig, Path], DetectorBackend]] = {}


def register(name: str):
    """Class decorator: the backend ``detect.backend: <name>`` builds. A name registered twice is a bug."""

    def add(cls):
        if name in BACKENDS:
            raise ValueError(f"detector backend {name!r}: expected one class, got a second ({cls.__name__})")
        BACKENDS[name] = cls
        return cls

    return add


def create_backend(cfg: DetectConfig, path: Path) -> DetectorBackend:
    """The registered backend ``cfg.backend`` built on model ``path``; an unknown name is a :class:`ModelError`."""
    if cfg.backend not in BACKENDS:
        raise ModelError(f"detect.backend: expected one of {sorted(BACKENDS)}, got {cfg.backend!r}")
    backend = BACKENDS[cfg.backend](cfg, path)
    if not isinstance(backend, DetectorBackend):
        raise ModelError(f"detect.backend {cfg.backend!r}: its class does not keep the detector contract")
    return backend
