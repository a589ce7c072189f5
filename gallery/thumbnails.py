"""The thumbnail store: JPEG files under one root folder, referenced from SQL by store-relative POSIX paths.

Every path coming in (from SQL, the HTTP API or a caller) goes through :meth:`ThumbnailStore.resolve`, which
refuses absolute paths, ``..``, backslashes and anything that resolves outside the root (symlinks included).

Face images are biometric data: the folders this store creates are 0700 and its files 0600 (owner only).
:meth:`ThumbnailStore.for_database` is the one rule for where they go, used by every writer and by ``purge``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import cv2
import numpy as np

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.errors import MatchLogError, ThumbnailPathError

logger = logging.getLogger(__name__)

__all__ = ["ThumbnailStore"]

PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ThumbnailStore:
    """Thumbnails under ``root`` (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    @classmethod
    def for_database(cls, db: Database, config: GalleryConfig) -> ThumbnailStore | None:
        """``config.thumbnails_dir``, else ``<storage dir>/<db stem>_thumbnails``, else None (no storage
        dir)."""
        if config.thumbnails_dir:
            return cls(config.thumbnails_dir)
        folder = db.storage_dir(config.storage_dir)
        return cls(folder / f"{db.stem}_thumbnails") if folder is not None else None

    def resolve(self, rel: str) -> Path:
        """The file of store-relative path ``rel``; raises :class:`ThumbnailPathError` for any unsafe path."""
        if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
            raise ThumbnailPathError(
                f"thumbnail path: expected a relative path like 'source/run/track.jpg', got {rel!r}"
            )
        parts = rel.split("/")
        if not all(PART.fullmatch(p) for p in parts):
            raise ThumbnailPathError(
                f"thumbnail path: expected plain names inside the store (no '..', no "
                f"absolute path), got {rel!r}"
            )
        path = (self.root / Path(*parts)).resolve()
        if not path.is_relative_to(self.root):
            raise ThumbnailPathError(f"thumbnail path {rel!r}: resolves outside the thumbnail store")
        return path

    def write(self, rel: str, image: np.ndarray, quality: int = 90) -> Path:
        """Encode a BGR uint8 ``[H, W, 3]`` image as JPEG at ``rel`` (atomically) and return its file."""
        if not (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and min(image.shape[:2]) > 0
        ):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise MatchLogError(f"thumbnail: expected a BGR uint8 HxWx3 image, got {got}")
        path = self.resolve(rel)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise MatchLogError(f"thumbnail {rel}: JPEG encoding failed")
        self._make_folders(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.tobytes())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def _make_folders(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents with mode 0700 (existing folders keep theirs)."""
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for part in reversed(missing):
            try:
                part.mkdir(mode=0o700)
            except FileExistsError:  # made by another writer meanwhile
                continue

    def delete(self, rel: str) -> None:
        """Remove a thumbnail if it exists (unsafe paths are refused, missing files ignored)."""
        self.resolve(rel).unlink(missing_ok=True)
