"""The authors' template fusion, ``pre_norm_vector_add``: ``l2norm(sum_i w_i * norm_i * unit_i)``.

Unit features weighted by their pre-normalisation norms (the same as summing the raw features), optionally times
a per-item weight (quality). Enrollment, per-track fusion, evaluation protocols and the gallery all fuse through
here. A sum of zero length (every weight zero) has no direction: :class:`ZeroTemplateError`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ZeroTemplateError", "normalize", "pre_norm_vector_add", "weighted_sum"]


class ZeroTemplateError(ValueError):
    """The fused vector has zero (or non-finite) length."""


def weighted_sum(units: np.ndarray, norms: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``sum_i weights_i * norms_i * units_i`` in float64; ``units [N, D]``, ``norms [N]``, ``weights [N]``."""
    units = np.asarray(units, np.float64)
    w = np.asarray(norms, np.float64)
    if weights is not None:
        w = w * np.asarray(weights, np.float64)
    if units.ndim != 2 or w.shape != (len(units),):
        raise ValueError(
            f"fusion: expected units [N, D] and norms [N], got {list(units.shape)} and {list(w.shape)}"
        )
    return w @ units


def normalize(total: np.ndarray) -> np.ndarray:
    """A summed vector ``[D]`` (or rows ``[T, D]``) scaled to unit length, float32."""
    total = np.asarray(total, np.float64)
    length = np.linalg.norm(total, axis=-1, keepdims=True)
    if not np.all(np.isfinite(length)) or np.any(length == 0.0):
        raise ZeroTemplateError("template fusion: expected a non-zero weighted sum, got a zero vector")
    return (total / length).astype(np.float32)


def pre_norm_vector_add(
    units: np.ndarray, norms: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Unit template ``[D]`` float32 of ``units [N, D]`` with ``norms [N]`` (and optional ``weights [N]``)."""
    return normalize(weighted_sum(units, norms, weights))
