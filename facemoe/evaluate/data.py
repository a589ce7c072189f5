"""Evaluation inputs: insightface ``.bin`` pair sets, image lists and template protocol CSV files.

Every image is an aligned 112x112 face crop; images are returned as BGR uint8 arrays, the input of
any embedder's ``embed(crops)``.
"""

from __future__ import annotations

import csv
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from core.images import decode_image, read_image
from core.types import CROP_SIZE

from ..errors import FaceMoEError

__all__ = [
    "ImageList",
    "ProtocolError",
    "TemplateList",
    "read_crop",
    "read_image_list",
    "read_pair_bin",
    "read_templates",
]

logger = logging.getLogger(__name__)

_SHOWN = 3  # how many offending names an error message lists


class ProtocolError(FaceMoEError):
    """An evaluation file (pair set, image list, protocol CSV) that is missing, malformed or names bad images."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles lists, tuples, bytes, bools and numpy byte arrays only: a .bin is data, never code."""

    _ALLOWED: ClassVar[frozenset] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"expected only numpy arrays in a .bin pair set, got a reference to {module}.{name}"
        )


def _decode(data, what: str) -> np.ndarray:
    return _check_size(decode_image(bytes(data), what, ProtocolError), what)  # the one pixel cap first


def _check_size(img: np.ndarray, what: str) -> np.ndarray:
    if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
        raise ProtocolError(
            f"{what}: expected an aligned {CROP_SIZE}x{CROP_SIZE} face crop, "
            f"got {img.shape[1]}x{img.shape[0]}"
        )
    return img


def read_pair_bin(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """An insightface verification set: pickle of (list of 2P encoded images, list of P bools).

    Returns (2P BGR crops, ``[P]`` bool same-identity flags); pair i is images 2i and 2i+1.
    """
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"pair set not found: {path}")
    try:
        with path.open("rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ProtocolError(
            f"{path}: expected a pickled (images, same-flags) pair set, got an unreadable file "
            f"({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ProtocolError(f"{path}: expected a pair (images, same-flags), got {type(obj).__name__}")
    bins, same = obj
    if len(bins) != 2 * len(same) or not same:
        raise ProtocolError(
            f"{path}: expected 2 images per pair flag, got {len(bins)} images and {len(same)} flags"
        )
    images = [_decode(b, f"{path} image {i}") for i, b in enumerate(bins)]
    return images, np.asarray([bool(s) for s in same])


def read_crop(path: str | Path) -> np.ndarray:
    """One aligned crop file as BGR uint8 ``[112, 112, 3]``."""
    return _check_size(read_image(path, ProtocolError)[1], str(path))


def _read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """CSV rows keyed by lower-case column names; ``required`` columns must be present and non-empty."""
    if not path.is_file():
        raise ProtocolError(f"protocol file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ProtocolError(
                f"{path}: expected columns {', '.join(required)}, got {', '.join(columns) or 'none'}"
            )
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise ProtocolError(f"{path}: expected at least one row, got none")
    for i, row in enumerate(rows, start=2):
        empty = [c for c in required if not row.get(c)]
        if empty:
            raise ProtocolError(f"{path} line {i}: expected values for {', '.join(empty)}, got empty cells")
    return rows


def _resolve(paths: list[str], root: Path, source: Path) -> list[Path]:
    """Absolute image paths; every one must exist."""
    resolved = [(root / p) for p in paths]
    missing = sorted({str(p) for p in resolved if not p.is_file()})
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
        raise ProtocolError(
            f"{source}: names {len(missing)} image(s) that do not exist under {root}: {shown}"
        )
    return resolved


@dataclass(frozen=True)
class ImageList:
    """Images with subject labels and a role: ``probe``, ``gallery`` or ``distractor``."""

    paths: tuple[Path, ...]
    subjects: tuple[str, ...]
    roles: tuple[str, ...]


ROLES = ("probe", "gallery", "distractor")


def read_image_list(path: str | Path, root: str | Path | None = None) -> ImageList:
    """TinyFace-style list: CSV with columns ``image, subject, set`` (set = probe | gallery | distractor).

    Image paths are relative to ``root`` (default: the CSV's folder).
    """
    path = Path(path)
    rows = _read_rows(path, ("image", "subject", "set"))
    roles = [r["set"].lower() for r in rows]
    bad = sorted(set(roles) - set(ROLES))
    if bad:
        raise ProtocolError(f"{path}: expected set values {', '.join(ROLES)}, got {', '.join(bad)}")
    root = Path(root) if root is not None else path.parent
    paths = _resolve([r["image"] for r in rows], root, path)
    return ImageList(tuple(paths), tuple(r["subject"] for r in rows), tuple(roles))


@dataclass(frozen=True)
class TemplateList:
    """Media grouped into templates: one row per medium, ``template`` and ``subject`` per row."""

    paths: tuple[Path, ...]
    templates: tuple[str, ...]
    subjects: tuple[str, ...]


def read_templates(path: str | Path, root: str | Path | None = None) -> TemplateList:
    """IJB-S / BRIAR-style protocol CSV: columns ``TEMPLATE_ID, SUBJECT_ID, FILENAME`` (any case, extra
    columns ignored). A template must belong to a single subject. Paths are relative to ``root``."""
    path = Path(path)
    rows = _read_rows(path, ("template_id", "subject_id", "filename"))
    owner: dict[str, str] = {}
    for row in rows:
        subject = owner.setdefault(row["template_id"], row["subject_id"])
        if subject != row["subject_id"]:
            raise ProtocolError(
                f"{path}: template {row['template_id']} expected one subject, got "
                f"{subject} and {row['subject_id']}"
            )
    root = Path(root) if root is not None else path.parent
    paths = _resolve([r["filename"] for r in rows], root, path)
    return TemplateList(
        tuple(paths), tuple(r["template_id"] for r in rows), tuple(r["subject_id"] for r in rows)
    )
