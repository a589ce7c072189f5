"""What to enroll, read from disk: a gallery folder (one subfolder per identity, or images named after people) or
a labels file (image path -> identity)."""

from __future__ import annotations

import json
from pathlib import Path

from gallery.errors import EnrollmentError

__all__ = ["IMAGE_SUFFIXES", "folder_images", "read_labels"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def folder_images(root: Path) -> dict[str, list[Path]]:
    """Identity name -> its image files (sorted): one subfolder per identity, or images directly in ``root``
    named after their identity (``Alice.jpg``); both layouts may be mixed."""
    root = Path(root)
    if not root.is_dir():
        raise EnrollmentError(
            f"gallery folder {root}: expected a folder of identity subfolders, got no folder"
        )
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            images = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                found.setdefault(entry.name, []).extend(images)
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(entry.stem, []).append(entry)
    if not found:
        raise EnrollmentError(
            f"gallery folder {root}: expected identity subfolders or images named after people "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}), found none"
        )
    return found


def read_labels(path: Path) -> dict[str, list[Path]]:
    """Identity name -> image files from a JSON object ``{"image path": "identity", ...}`` (paths relative to
    the file's folder)."""
    path = Path(path)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EnrollmentError(f"labels file {path}: cannot read it as JSON ({exc})") from exc
    if (
        not isinstance(labels, dict)
        or not labels
        or not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in labels.items())
    ):
        raise EnrollmentError(
            f"labels file {path}: expected a non-empty JSON object of image path -> identity "
            f"name, got {type(labels).__name__}"
        )
    found: dict[str, list[Path]] = {}
    for image, name in sorted(labels.items()):
        found.setdefault(name.strip(), []).append(path.parent / image)
    return found
